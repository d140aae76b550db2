"""SampledEvaluation never scores foreign text with the embedded task's lexicon (issue 14, item 5).

Without a configured reward, ``eval/reward`` is logged on embedded prompts only; on a user's own
data the callback logs ``eval/kl`` and ``eval/length`` and says once why. A configured reward is
always used.
"""

from __future__ import annotations

import json
import logging
import math

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


# ----- the final evaluation's second draw (final_kl_relative_se) ----------------------------------
def test_second_draw_size_follows_the_first_draws_relative_se():
    evaluation = SampledEvaluation(final_kl_relative_se=0.05, final_max_prompts=2000)
    per_prompt = torch.tensor([[0.2], [1.8]]).repeat(128, 1)  # 256 prompts' KLs: mean 1, SE 0.8 / 16 = 5%, just over
    mean, se = per_prompt.mean().item(), per_prompt.std().item() / 16
    # r = SE/KL; the whole sample needs 256 * (r / 0.05)^2 prompts, with a 1.2x margin.
    assert se / mean > 0.05
    assert evaluation.second_draw_size(per_prompt, 256) == math.ceil(1.2 * 256 * (se / mean / 0.05) ** 2) - 256
    assert SampledEvaluation(final_kl_relative_se=0.001, final_max_prompts=1000).second_draw_size(per_prompt, 256) == 1000 - 256  # capped
    assert SampledEvaluation(final_kl_relative_se=0.5).second_draw_size(per_prompt, 256) == 0  # met by the first draw
    assert evaluation.second_draw_size(torch.zeros(256, 1), 256) == 0  # KL 0: no relative error to meet
    assert evaluation.second_draw_size(per_prompt - 0.99, 256) == 2000 - 256  # KL 0.01 with the same spread: the cap


def reference_and_moved_policy():
    """embedded:micro twice, the second with a seeded nudge to its output layer: a policy a little
    away from its reference, so eval/kl > 0."""
    from lit_align.modeling import load_causal_lm

    reference, policy = load_causal_lm("embedded:micro"), load_causal_lm("embedded:micro")
    with torch.no_grad():
        policy.lm_head.weight.add_(0.05 * torch.randn(policy.lm_head.weight.shape, generator=torch.Generator().manual_seed(0)))
    return reference, policy


def test_final_evaluation_adds_a_second_draw_and_reports_over_both(own_data):
    reference, policy = reference_and_moved_policy()
    settings = dict(num_prompts=4, final_num_prompts=16, final_samples_per_prompt=2, max_new_tokens=6, prompts="embedded:prompts")
    one_draw = SampledEvaluation(**settings)
    first = one_draw.measure(policy, own_data, reference, final=True)
    assert "eval/prompts" not in first and first["eval/kl"] > 0 and first["eval/kl_se"] > 0.05 * first["eval/kl"]

    evaluation = SampledEvaluation(**settings, final_kl_relative_se=0.05, final_max_prompts=200)
    both = evaluation.measure(policy, own_data, reference, final=True)
    first_kl = one_draw._draw(policy, own_data, one_draw.held_out_prompts(own_data, 16), 2, one_draw.seed, reference)["kl"]
    total = 16 + evaluation.second_draw_size(first_kl, 16)
    assert both["eval/prompts"] == total > 16
    # The first draw is the one-draw evaluation's; the second is on the next held-out prompts, with the next seed.
    second = evaluation._draw(policy, own_data, evaluation.held_out_prompts(own_data, total)[16:], 2, evaluation.seed + 1, reference)["kl"]
    assert both["eval/kl"] == pytest.approx((first["eval/kl"] * 16 + second.mean().item() * (total - 16)) / total, rel=1e-5)
    assert both["eval/kl_se"] < first["eval/kl_se"]
    # The second draw's prompts are the next held-out ones, not the first 16 again.
    prompts = [ids for _, ids in evaluation.held_out_prompts(own_data, total)]
    assert prompts[:16] == [ids for _, ids in one_draw.held_out_prompts(own_data, 16)] and prompts[16:] != prompts[: total - 16]
    # Evaluations before the last step stay one draw of num_prompts.
    assert "eval/prompts" not in evaluation.measure(policy, own_data, reference)


def test_second_draw_says_when_the_held_out_prompts_run_out(tmp_path, caplog):
    own_data = SFTDataModule(model="embedded:micro", dataset=sft_file(tmp_path), batch_size=2, max_length=48, max_prompt_length=24, val_fraction=0.5)
    own_data.setup()
    reference, policy = reference_and_moved_policy()
    available = len(own_data.eval_prompts(10_000))  # the user's own file: a few validation prompts
    evaluation = SampledEvaluation(final_num_prompts=2, final_samples_per_prompt=2, max_new_tokens=6, final_kl_relative_se=0.01, final_max_prompts=500)
    with caplog.at_level(logging.INFO):
        result = evaluation.measure(policy, own_data, reference, final=True)
    assert 2 < available < 500 and result["eval/prompts"] == available
    assert f"only {available} held-out prompts exist" in caplog.text


def test_bad_evaluation_settings_are_config_errors():
    from lit_align.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown engine 'vllm'.*generate, shared_prefill"):
        SampledEvaluation(engine="vllm")
    with pytest.raises(ConfigError, match="final_kl_relative_se"):
        SampledEvaluation(final_kl_relative_se=0.0)
    with pytest.raises(ConfigError, match=r"final_max_prompts must be an integer in \[256"):
        SampledEvaluation(final_num_prompts=256, final_kl_relative_se=0.05, final_max_prompts=100)
