"""The online recipes on a user's own prompts (issue 23, item 3), and the warnings of a reward that
carries no information (item 2).

One rule for the evaluation reward everywhere: the callback's own, else the algorithm's, else the
embedded lexicon on embedded prompts only; the recipes' checkpoint monitors eval/reward only when
the run logs it. Each recipe runs through the CLI on a small prompt file with a tiny policy and a
tiny reward model: 2 steps, one validation, no error.
"""

from __future__ import annotations

import json
import logging
import os
import warnings

import pytest
import torch
from lightning import Trainer

from lit_align.algorithms import OnlineDPO
from lit_align.callbacks import LoggedMetricCheckpoint, SampledEvaluation
from lit_align.rewards import RewardFunction, sanity
from lit_align.online.scoring import score_completions
from tests.conftest import REPO, run_cli
from tests.families import example_rows
from tests.test_online_dpo import Constant, prompts_data
from tests.test_rewards import save_tiny_classifier

CONSTANT = "gave all"
NO_PAIR = "found no usable pair"


@pytest.fixture(scope="module")
def user_files(tmp_path_factory):
    """A prompt file in the prompt schema (one ``prompt`` per row) and a tiny one-output reward model."""
    root = tmp_path_factory.mktemp("user")
    prompts = root / "my_prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": p}) + "\n" for p, _, _ in example_rows(24)))
    save_tiny_classifier(root / "reward_model", num_labels=1)
    return {"prompts": str(prompts), "reward_model": str(root / "reward_model")}


def recipe(name: str, user_files: dict, root, reward: bool = True):
    """``python -m lit_align fit --config configs/<name>.yaml`` on the user's prompts, 2 steps, one validation."""
    args = [
        "fit", "--config", os.path.join(REPO, f"configs/{name}.yaml"), "--model.init_args.model", "embedded:micro",
        "--data.init_args.dataset", user_files["prompts"], "--data.init_args.batch_size", "4", "--data.init_args.max_new_tokens", "6",
        "--trainer.max_steps", "2", "--trainer.val_check_interval", "2", "--trainer.limit_val_batches", "1",
        "--trainer.num_sanity_val_steps", "0", "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
    ]  # fmt: skip
    if reward:
        args += ["--model.init_args.reward", "lit_align.rewards.HFClassifierReward", "--model.init_args.reward.model", user_files["reward_model"]]
    return run_cli(args, str(root))


def callback(cli, kind):
    return next(cb for cb in cli.trainer.callbacks if isinstance(cb, kind))


@pytest.mark.parametrize("name", ["online_dpo", "bond", "jbond"])
def test_online_recipe_on_own_prompts_evaluates_with_the_algorithms_reward(name, user_files, tmp_path):
    cli = recipe(name, user_files, tmp_path)
    logged = cli.trainer.callback_metrics
    evaluation = callback(cli, SampledEvaluation)
    assert cli.trainer.global_step == 2 and "eval/reward" in logged
    # The algorithm's reward model, not the lexicon (no eval/gold_reward: these are not embedded prompts).
    assert evaluation.reward_for(cli.datamodule) is cli.model.reward and "eval/gold_reward" not in logged
    # The logged value is that reward of the evaluation's samples (the same seed draws them again).
    again = evaluation.measure(cli.model.policy.policy, cli.datamodule)["eval/reward"]
    assert logged["eval/reward"].item() == pytest.approx(again, abs=1e-5)
    assert float(evaluation.last_rewards.std()) > 0  # a reward model's scores, not one constant
    if name != "online_dpo":  # Best-of-N evaluation: the quantile under the same reward
        assert 0.0 <= logged["eval/quantile"].item() <= 1.0 and "eval/bon_reward" in logged
    checkpoint = callback(cli, LoggedMetricCheckpoint)
    assert checkpoint.best_model_score.item() == pytest.approx(logged["eval/reward"].item())


def test_online_dpo_recipe_with_the_lexicon_on_own_prompts_logs_no_reward_and_keeps_the_latest_checkpoint(user_files, tmp_path, caplog):
    with caplog.at_level(logging.INFO):
        cli = recipe("online_dpo", user_files, tmp_path, reward=False)  # the recipe's reward: the embedded lexicon
    logged = cli.trainer.callback_metrics
    assert cli.trainer.global_step == 2 and "eval/kl" in logged and "eval/reward" not in logged
    assert "the algorithm's reward is the embedded task's lexicon" in caplog.text and "model.init_args.reward" in caplog.text
    checkpoint = callback(cli, LoggedMetricCheckpoint)
    assert "keeps the latest checkpoint, not the best by 'eval/reward'" in caplog.text
    assert os.path.isfile(checkpoint.best_model_path) and os.path.isfile(checkpoint.last_model_path)


def test_embedded_prompts_log_the_gold_reward_beside_a_learned_one(user_files):
    datamodule, _ = prompts_data(n=8, batch_size=4)
    from lit_align.modeling import load_causal_lm
    from lit_align.rewards import HFClassifierReward

    evaluation = SampledEvaluation(num_prompts=2, samples_per_prompt=2, max_new_tokens=4)
    evaluation.algorithm_reward = HFClassifierReward(user_files["reward_model"], device="cpu")
    result = evaluation.measure(load_causal_lm("embedded:micro"), datamodule)
    assert evaluation.reward_for(datamodule) is evaluation.algorithm_reward
    assert -1.0 <= result["eval/gold_reward"] <= 1.0 and result["eval/reward"] != result["eval/gold_reward"]


# ----- warnings ------------------------------------------------------------------------------------
class Halves(RewardFunction):
    def __call__(self, prompts, completions):
        return torch.tensor([float(i % 2) for i in range(len(completions))])


def test_a_reward_that_scores_a_batch_alike_is_warned_about_once():
    reward = Constant()
    with pytest.warns(UserWarning, match=CONSTANT) as record:
        score_completions_twice(reward)
    assert sum(CONSTANT in str(w.message) for w in record) == 1  # two batches, one warning
    assert "Constant" in str(record[0].message) and "4 samples" in str(record[0].message)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        score_completions_twice(Halves())  # scores that differ: silent


def score_completions_twice(reward):
    from lit_align.embedded.tokenizer import build_tokenizer

    tokenizer = build_tokenizer()
    ids = [[tokenizer("great .", add_special_tokens=False)["input_ids"], tokenizer("dull .", add_special_tokens=False)["input_ids"]]] * 2
    for _ in range(2):
        score_completions(tokenizer, reward, ["the film was", "the plot was"], ids)


def test_online_dpo_warns_after_consecutive_batches_without_a_pair(monkeypatch):
    monkeypatch.setattr(sanity, "NO_PAIR_PATIENCE", 3)
    datamodule, _ = prompts_data(n=16, batch_size=4)

    def fit(steps):
        module = OnlineDPO(model="embedded:micro", reward=Constant())
        trainer = Trainer(max_steps=steps, limit_val_batches=0, logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
        with warnings.catch_warnings(record=True) as record:
            warnings.simplefilter("always")
            trainer.fit(module, datamodule=datamodule)
        return [str(w.message) for w in record if NO_PAIR in str(w.message)], module

    assert fit(2)[0] == []  # fewer batches than the patience: silent
    said, module = fit(4)
    assert len(said) == 1 and "in 3 training batches in a row" in said[0] and "(4 per batch)" in said[0]
    assert module.no_pair_watch.streak == 4
