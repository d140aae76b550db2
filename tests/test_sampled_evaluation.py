"""SampledEvaluation never scores foreign text with the embedded task's lexicon (issue 14, item 5).

Without a configured reward, ``eval/reward`` is logged on embedded prompts only; on a user's own
data the callback logs ``eval/kl`` and ``eval/length`` and says once why. A configured reward is
always used.
"""

from __future__ import annotations

import json
import logging

import pytest
import torch

from lit_align.callbacks import SampledEvaluation
from lit_align.cli import main
from lit_align.data.sft import SFTDataModule
from lit_align.rewards import RewardFunction
from tests.families import example_rows

WHY = "SampledEvaluation logs eval/kl and eval/length only"


def sft_file(tmp_path) -> str:
    path = tmp_path / "own.jsonl"
    path.write_text("".join(json.dumps({"prompt": p, "completion": c}) + "\n" for p, c, _ in example_rows(12)))
    return str(path)


def run(tmp_path, dataset: str, extra: list[str] = ()):
    evaluation = {"class_path": "lit_align.callbacks.SampledEvaluation", "init_args": {"num_prompts": 2, "samples_per_prompt": 1, "max_new_tokens": 4}}
    return main([
        "fit", "--model", "lit_align.algorithms.SFT", "--model.model", "embedded:micro",
        "--data", "lit_align.data.sft.SFTDataModule", "--data.dataset", dataset, "--data.batch_size", "2",
        "--data.num_examples", "8", "--data.num_val_examples", "4", "--data.max_length", "48", "--data.max_prompt_length", "24",
        "--trainer.logger", "false", "--trainer.default_root_dir", str(tmp_path), "--trainer.max_steps", "2", "--trainer.val_check_interval", "1",
        "--trainer.limit_val_batches", "1", "--trainer.num_sanity_val_steps", "0", "--trainer.enable_checkpointing", "false",
        "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false", "--trainer.callbacks", json.dumps([evaluation]), *extra,
    ])  # fmt: skip


def test_own_data_logs_kl_and_length_only_and_says_why_once(tmp_path, caplog):
    with caplog.at_level(logging.INFO):
        cli = run(tmp_path, sft_file(tmp_path))
    logged = cli.trainer.callback_metrics
    assert "eval/kl" in logged and "eval/length" in logged
    assert "eval/reward" not in logged
    assert caplog.text.count(WHY) == 1  # two evaluations, one explanation
    assert "own.jsonl" in caplog.text and "HFClassifierReward" in caplog.text


def test_embedded_data_is_scored_with_the_lexicon(tmp_path, caplog):
    with caplog.at_level(logging.INFO):
        cli = run(tmp_path, "embedded:demonstrations")
    evaluation = next(cb for cb in cli.trainer.callbacks if isinstance(cb, SampledEvaluation))
    assert "eval/reward" in cli.trainer.callback_metrics and "eval/reward" in evaluation.last
    assert -1.0 <= evaluation.last["eval/reward"] <= 1.0
    assert WHY not in caplog.text


class CountingReward(RewardFunction):
    """Scores a completion by its length in characters; counts calls."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, prompts, completions):
        self.calls += 1
        return torch.tensor([float(len(c)) for c in completions])


@pytest.fixture(scope="module")
def own_data(tmp_path_factory):
    module = SFTDataModule(model="embedded:micro", dataset=sft_file(tmp_path_factory.mktemp("own")), batch_size=2, max_length=48, max_prompt_length=24)
    module.setup()
    return module


def test_configured_reward_is_used_on_own_data(own_data):
    from lit_align.modeling import load_causal_lm

    policy = load_causal_lm("embedded:micro")
    reward = CountingReward()
    result = SampledEvaluation(reward=reward, num_prompts=2, samples_per_prompt=2, max_new_tokens=4).measure(policy, own_data)
    assert reward.calls == 1 and result["eval/reward"] > 0
    # Embedded prompts (``prompts: embedded:prompts``) on the same data: the lexicon applies again.
    embedded = SampledEvaluation(num_prompts=2, samples_per_prompt=1, max_new_tokens=4, prompts="embedded:prompts")
    assert "eval/reward" in embedded.measure(policy, own_data)
    assert "eval/reward" not in SampledEvaluation(num_prompts=2, samples_per_prompt=1, max_new_tokens=4).measure(policy, own_data)
