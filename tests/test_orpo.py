"""The ORPO LightningModule: reference-free in memory, metric names, configs, end to end."""

from __future__ import annotations

import os

import pytest
import torch

from lit_align.algorithms import KTO, ORPO
from lit_align.callbacks import SampledEvaluation
from lit_align.modeling import load_causal_lm
from lit_align.utils.scalars import last, read_scalars
from tests.conftest import REPO, run_cli

CONFIGS = ["--config", os.path.join(REPO, "configs/base.yaml"), "--config", os.path.join(REPO, "configs/data/embedded_pairs.yaml"), "--config", os.path.join(REPO, "configs/algorithm/orpo.yaml")]


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters()) + sum(b.numel() for b in module.buffers())


def test_holds_the_policy_alone():
    policy_only = count(load_causal_lm("embedded:tiny"))
    orpo = ORPO(model="embedded:tiny")
    assert orpo.policy.reference is None and not orpo.policy.has_reference
    assert count(orpo) == policy_only
    assert count(KTO(model="embedded:tiny")) == 2 * policy_only  # a method with a reference holds two
    with pytest.raises(ValueError, match="reference-free"):
        ORPO(model="embedded:tiny", reference="copy")


def test_config_runs_fast_dev_run_with_orpo_metrics(tmp_path):
    cli = run_cli(["fit", *CONFIGS, "--model.init_args.model=embedded:tiny", "--data.init_args.num_examples=24", "--data.init_args.num_val_examples=8",
                   "--data.init_args.batch_size=4", "--trainer.fast_dev_run=2", "--trainer.enable_progress_bar=false"], str(tmp_path))
    assert cli.trainer.global_step == 2 and cli.model.policy.reference is None
    metrics = cli.trainer.callback_metrics
    for name in ("nll_loss", "log_odds_ratio", "log_odds_chosen", "rewards/chosen", "rewards/rejected", "rewards/accuracies"):
        assert f"train/{name}" in metrics and f"val/{name}" in metrics, name
    # L = NLL + lambda * L_OR with L_OR = -log_odds_ratio (val values are epoch means over the same batches).
    expected = metrics["val/nll_loss"] - 0.1 * metrics["val/log_odds_ratio"]
    torch.testing.assert_close(metrics["val/loss"], expected, rtol=1e-4, atol=1e-4)
    # At a random init both sides are near-uniform: log-prob per token about -log(vocab size).
    assert metrics["val/nll_loss"].item() == pytest.approx(torch.log(torch.tensor(float(cli.model.policy.policy.config.vocab_size))).item(), rel=0.2)


@pytest.mark.slow
def test_orpo_improves_true_reward_over_sft(embedded_sft_model, tmp_path):
    cli = run_cli(["fit", *CONFIGS, f"--model.init_args.model={embedded_sft_model}", "--data.init_args.num_examples=1200", "--trainer.enable_progress_bar=false"], str(tmp_path))
    scalars = read_scalars(cli.trainer.logger.log_dir)
    assert cli.model.policy.reference is None  # still none after training
    assert last(scalars, "val/log_odds_chosen") > 0.0  # chosen became likelier than rejected, in odds
    assert last(scalars, "val/rewards/accuracies") > 0.55
    evaluation = next(cb for cb in cli.trainer.callbacks if isinstance(cb, SampledEvaluation))
    baseline = evaluation.measure(load_causal_lm(embedded_sft_model), cli.datamodule)["eval/reward"]
    assert last(scalars, "eval/reward") > baseline + 0.1
    assert last(scalars, "eval/kl") > 0.0
