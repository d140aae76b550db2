"""The ORPO LightningModule: reference-free in memory, metric names, configs, end to end."""

from __future__ import annotations

import json
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
    assert orpo.nll_tokens == "prompt_and_completion"  # the whole chosen row, as the authors' code and TRL (issue 23)
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
    # prefix_sharing pinned: the thresholds below were measured on the unshared forward.
    cli = run_cli(["fit", *CONFIGS, f"--model.init_args.model={embedded_sft_model}", "--data.init_args.num_examples=1200", "--model.init_args.prefix_sharing=false", "--trainer.enable_progress_bar=false"], str(tmp_path))
    scalars = read_scalars(cli.trainer.logger.log_dir)
    assert cli.model.policy.reference is None  # still none after training
    assert last(scalars, "val/log_odds_chosen") > 0.0  # chosen became likelier than rejected, in odds
    # 0.55 and +0.1 reward under the old default (NLL on the completion only); with the prompt in the NLL (the
    # authors' and TRL's default since issue 23) one epoch reached 0.53 and +0.083 here: the odds-ratio term gets
    # a smaller share of the step.
    assert last(scalars, "val/rewards/accuracies") > 0.5
    evaluation = next(cb for cb in cli.trainer.callbacks if isinstance(cb, SampledEvaluation))
    baseline = evaluation.measure(load_causal_lm(embedded_sft_model), cli.datamodule)["eval/reward"]
    assert last(scalars, "eval/reward") > baseline + 0.05
    assert last(scalars, "eval/kl") > 0.0


PAIRS = [
    {"prompt": "the film was", "chosen": "great and moving .", "rejected": "bad ."},
    {"prompt": "a story that never", "chosen": "stops surprising .", "rejected": "drags on and on ."},
]


def pair_batch(tmp_path):
    from lit_align.data.pairwise import PairwiseDataModule

    path = tmp_path / "pairs.jsonl"
    path.write_text("\n".join(json.dumps(row) for row in PAIRS * 2) + "\n")
    data = PairwiseDataModule(dataset=str(path), model="embedded:tiny", max_length=40, max_prompt_length=16, batch_size=2, val_fraction=0.5, seed=0)
    data.setup("fit")
    return next(iter(data.train_dataloader()))


@pytest.mark.parametrize("nll_tokens", ["completion", "prompt_and_completion"])
def test_nll_tokens_match_the_causal_lm_loss_they_name(nll_tokens, tmp_path):
    """lambda = 0 leaves the NLL alone: the HF causal-LM loss of the chosen rows over the tokens named
    (completion only: the paper's L_SFT; prompt and completion: the authors' code and TRL)."""
    batch = pair_batch(tmp_path)
    torch.manual_seed(0)
    module = ORPO(model="embedded:tiny", odds_ratio_weight=0.0, nll_tokens=nll_tokens)
    loss, logs = module.compute_loss(batch, "train")
    n = batch.num_pairs
    labels = batch.input_ids[:n].clone()
    keep = batch.loss_mask[:n].bool() if nll_tokens == "completion" else batch.attention_mask[:n].bool()
    labels[~keep] = -100
    with torch.no_grad():
        expected = module.policy.policy(input_ids=batch.input_ids[:n], attention_mask=batch.attention_mask[:n], labels=labels).loss
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert logs["nll_loss"].item() == pytest.approx(expected.item(), rel=1e-5)


def test_bad_arguments_raise_config_errors_naming_them():
    from lit_align.errors import ConfigError

    with pytest.raises(ConfigError, match=r"ORPO: odds_ratio_weight must be in \[0"):
        ORPO(model="embedded:tiny", odds_ratio_weight=-0.1)
    with pytest.raises(ConfigError, match="ORPO: nll_tokens must be"):
        ORPO(model="embedded:tiny", nll_tokens="prompt")
