"""The user's path of RLOO / GRPO / PPO (issue 21, section 4): the shipped recipes, unchanged, on a
user's own model (a tiny Qwen2-style checkpoint, tests/families.py) and prompts file, scored by a
reward model that configs/reward_model.yaml trained on the user's pairs and exported. PPO's critic
starts from that reward model (``value_model``), as Huang et al. recommend."""

from __future__ import annotations

import contextlib
import json
import os

import pytest
import torch

from tests.conftest import REPO, run_cli
from tests.families import example_rows, family_checkpoints  # noqa: F401  (fixture)

SMALL = ["--data.init_args.batch_size=2", "--data.init_args.val_fraction=0.2", "--data.init_args.max_length=64", "--data.init_args.max_prompt_length=32",
         "--trainer.max_steps=2", "--trainer.val_check_interval=2", "--trainer.limit_val_batches=1", "--trainer.num_sanity_val_steps=0",
         "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]  # fmt: skip


@pytest.fixture(scope="module")
def exported_reward_model(family_checkpoints, tmp_path_factory) -> tuple[str, str]:  # noqa: F811
    """(the user's model, the reward model configs/reward_model.yaml exports from it and the user's pairs)."""
    checkpoint = family_checkpoints["models"]["qwen2"]
    root = tmp_path_factory.mktemp("user_rm")
    with contextlib.chdir(root):  # the recipe exports to the relative path data/embedded/reward_model
        cli = run_cli(["fit", "--config", os.path.join(REPO, "configs/reward_model.yaml"), "--model.init_args.model", checkpoint,
                       "--model.init_args.gold_reward=null", "--data.init_args.dataset", family_checkpoints["data"]["pairwise", "plain"], *SMALL], str(root))  # fmt: skip
    assert cli.trainer.global_step == 2
    return checkpoint, str(root / "data" / "embedded" / "reward_model")


# RLOO's recipe differs from GRPO's only in the loss (same data, reward and flags): two runs cover the path.
@pytest.mark.parametrize("method", ["grpo", "ppo"])
def test_recipe_on_users_model_prompts_and_reward_model(method, exported_reward_model, tmp_path):
    checkpoint, reward_model = exported_reward_model
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": p}) + "\n" for p, _, _ in example_rows(10, seed=3)))
    args = ["fit", "--config", os.path.join(REPO, f"configs/{method}.yaml"), "--model.init_args.model", checkpoint,
            "--model.init_args.reward", "lit_align.rewards.HFClassifierReward", "--model.init_args.reward.model", reward_model,
            "--data.init_args.dataset", str(prompts), "--data.init_args.max_new_tokens=6", *SMALL]  # fmt: skip
    if method == "ppo":
        args += ["--model.init_args.value_model", reward_model, "--model.init_args.num_epochs=2"]
    with contextlib.chdir(tmp_path):
        cli = run_cli(args, str(tmp_path))
    assert cli.trainer.global_step == 2
    metrics = cli.trainer.callback_metrics
    # The learned reward scored the samples (a trained head: not all zero), and the sampled evaluation ran.
    assert torch.isfinite(metrics["train/reward"]) and metrics["train/reward_std"] > 0
    assert torch.isfinite(metrics["train/loss"]) and torch.isfinite(metrics["val/reward"]) and torch.isfinite(metrics["eval/kl"])
    if method == "ppo":
        assert type(cli.model.critic).__name__ == "Qwen2ForSequenceClassification"
