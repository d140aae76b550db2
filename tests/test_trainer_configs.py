"""The trainer presets (configs/trainer/*.yaml) compose with a recipe (configs/dpo.yaml) and run."""

from __future__ import annotations

import os

import pytest
import torch

from lit_align.callbacks import PaddingStats
from lit_align.fsdp import decoder_layers
from tests.conftest import REPO, run_cli

BASE = ["--config", os.path.join(REPO, "configs/dpo.yaml")]
SMALL = ["--model.init_args.model=embedded:micro", "--data.init_args.num_examples=24", "--data.init_args.num_val_examples=8", "--data.init_args.batch_size=4", "--trainer.fast_dev_run=2", "--trainer.enable_progress_bar=false"]


def preset(name: str) -> list[str]:
    return ["--config", os.path.join(REPO, "configs/trainer", f"{name}.yaml")]


def test_bf16_preset_with_precomputed_reference_and_padding_stats(tmp_path):
    cli = run_cli(["fit", *BASE, *preset("bf16"), *SMALL, "--model.init_args.reference=precomputed", "--trainer.callbacks+=lit_align.callbacks.PaddingStats"], str(tmp_path))
    assert cli.trainer.precision == "bf16-mixed"
    assert cli.model.policy.reference is None
    assert all("reference_logps" in ex for ex in cli.datamodule.train_examples)
    fraction = cli.trainer.callback_metrics["train/padding_fraction"].item()
    assert 0.0 < fraction < 1.0
    stats = next(cb for cb in cli.trainer.callbacks if isinstance(cb, PaddingStats))
    assert stats.padded > stats.tokens > 0  # 2 fast_dev_run batches counted, with padding in them


def test_ddp_preset_runs_on_cpu(tmp_path):
    try:
        cli = run_cli(["fit", *BASE, *preset("ddp"), *SMALL, "--trainer.accelerator=cpu", "--trainer.devices=1"], str(tmp_path))
        assert type(cli.trainer.strategy).__name__ == "DDPStrategy"
        assert cli.trainer.num_nodes == 1
        assert torch.isfinite(cli.trainer.callback_metrics["train/loss"])
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def test_fsdp_preset_instantiates_and_names_the_cpu_refusal(tmp_path):
    args = ["fit", *BASE, *preset("fsdp"), *SMALL]
    if torch.cuda.is_available():
        cli = run_cli(args + ["--trainer.devices=1"], str(tmp_path))
        assert cli.trainer.strategy.auto_wrap_policy is decoder_layers
        return
    # Lightning refuses FSDP on CPU; the preset itself parsed and its strategy was built first.
    with pytest.raises(ValueError, match="The strategy `fsdp` requires a GPU accelerator"):
        run_cli(args + ["--trainer.accelerator=cpu"], str(tmp_path))
