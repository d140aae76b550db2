"""The KTO LightningModule: wiring of the reference point, closed form at init, configs, end to end."""

from __future__ import annotations

import json
import os

import pytest
import torch
from lightning import Trainer

from lit_align.algorithms import KTO
from lit_align.callbacks import SampledEvaluation
from lit_align.data.unpaired import UnpairedDataModule
from lit_align.utils.scalars import last, read_scalars
from tests.conftest import REPO, run_cli

CONFIGS = ["--config", os.path.join(REPO, "configs/kto.yaml")]
SMALL = ["--data.init_args.num_examples=24", "--data.init_args.num_val_examples=8", "--data.init_args.batch_size=4", "--trainer.enable_progress_bar=false"]
WORDS = ["good", "dull", "great", "awful", "lovely", "boring", "superb", "messy", "fresh", "weak"]


def local_data(tmp_path, n: int = 10, desirable_every: int = 2) -> str:
    rows = [{"prompt": f"the {'plot' if i % 3 else 'cast'} was", "completion": f"very {WORDS[i % 10]} .", "label": i % desirable_every == 0} for i in range(n)]
    path = tmp_path / "unpaired.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_loss_at_init_is_the_closed_form(tmp_path):
    """policy == reference: rho = 0 and z0 = 0, so the loss is mean(lambda_y) / 2 and every reward 0."""
    dm = UnpairedDataModule(model="embedded:tiny", dataset=local_data(tmp_path), val_split="train", batch_size=5, max_length=16, max_prompt_length=8)
    dm.setup("fit")
    module = KTO(model="embedded:tiny", desirable_weight=2.0, undesirable_weight=0.5).eval()
    batch = dm.collate(dm.train_examples[:5])
    with torch.no_grad():
        loss, _ = module.compute_loss(batch, "val")
    expected = torch.where(batch.labels, 2.0, 0.5).mean() / 2
    torch.testing.assert_close(loss, expected)
    values = module.on_validation_epoch_end_metrics()
    assert values["kl"].item() == 0.0 and values["rewards/desirable"].item() == 0.0 and values["rewards/undesirable"].item() == 0.0
    # After moving the policy, z0 is the clamped mean log-ratio of the mismatched rows [5, 10).
    with torch.no_grad():
        for p in module.policy.policy.parameters():
            p.add_(0.05 * torch.randn_like(p))
        moved, _ = module.compute_loss(batch, "val")
        kl_rows = (batch.input_ids[5:], batch.attention_mask[5:], batch.loss_mask[5:])
        raw = (module.policy.policy_logps(*kl_rows).sum - module.policy.reference_logps(*kl_rows).sum).mean()
    assert not torch.isclose(moved, expected)
    values = module.on_validation_epoch_end_metrics()
    assert values["kl"].item() == pytest.approx(max(0.0, raw.item()), abs=1e-5)
    assert values["rewards/desirable"].item() != 0.0
    with torch.no_grad():
        single, _ = module.compute_loss(dm.collate(dm.train_examples[:1]), "val")  # no mismatched pair: z0 = 0
    assert torch.isfinite(single) and module.on_validation_epoch_end_metrics()["kl"].item() == 0.0


def test_imbalanced_data_warns_and_trains(tmp_path):
    # 2 desirable per 8 undesirable with lambda_D = lambda_U: ratio 0.25, outside [1, 4/3].
    args = ["fit", *CONFIGS, "--model.init_args.model=embedded:tiny", f"--data.init_args.dataset={local_data(tmp_path, 10, desirable_every=5)}",
            "--data.init_args.from_pairs=false", "--data.init_args.val_split=train", "--data.init_args.batch_size=3", "--trainer.fast_dev_run=1", "--trainer.enable_progress_bar=false"]
    with pytest.warns(UserWarning, match=r"set desirable_weight in \[4, 5.33\]"):
        cli = run_cli(args, str(tmp_path))
    assert cli.trainer.global_step == 1


def test_label_counts_reach_kto_through_connect_without_the_cli(tmp_path, monkeypatch):
    module = KTO(model="embedded:tiny")
    assert module.check_label_counts(4, 3) is None  # lambda_D n_D / (lambda_U n_U) = 4/3: inside [1, 4/3]
    with pytest.warns(UserWarning, match=r"set desirable_weight in \[4, 5.33\]"):
        assert "= 0.25, outside the range" in module.check_label_counts(2, 8)
    dm = UnpairedDataModule(model="embedded:tiny", dataset=local_data(tmp_path, 10, desirable_every=5), from_pairs=False, val_split="train", batch_size=3, max_length=16, max_prompt_length=8)
    prepared = []
    monkeypatch.setattr(module.policy, "prepare", lambda setup, datamodule: prepared.append(datamodule))
    trainer = Trainer(fast_dev_run=1, logger=False, enable_progress_bar=False, enable_checkpointing=False, enable_model_summary=False)
    # A plain Trainer.fit: the base's setup connects the DataModule once (the CLI does it before fit).
    with pytest.warns(UserWarning, match=r"set desirable_weight in \[4, 5.33\]"):
        trainer.fit(module, datamodule=dm)
    # The reference mode's set-up pass ran at fit start (KTO's on_fit_start calls the base's) and at validation start.
    assert prepared == [dm, dm]


def test_config_runs_fast_dev_run_with_kto_metrics(tmp_path):
    cli = run_cli(["fit", *CONFIGS, "--model.init_args.model=embedded:tiny", *SMALL, "--trainer.fast_dev_run=2"], str(tmp_path))
    assert cli.trainer.global_step == 2
    assert isinstance(cli.datamodule, UnpairedDataModule)
    metrics = cli.trainer.callback_metrics
    for name in ("train/loss", "train/kl", "train/rewards/accuracies", "val/kl", "val/rewards/desirable", "val/rewards/undesirable", "val/rewards/accuracies"):
        assert name in metrics and bool(torch.isfinite(metrics[name])), name
    assert metrics["train/kl"] >= 0.0


@pytest.mark.slow
def test_kto_improves_true_reward_over_sft(embedded_sft_model, tmp_path):
    cli = run_cli(["fit", *CONFIGS, f"--model.init_args.model={embedded_sft_model}", "--data.init_args.num_examples=1200", "--trainer.enable_progress_bar=false"], str(tmp_path))
    scalars = read_scalars(cli.trainer.logger.log_dir)
    # Implicit rewards separate the two kinds, and the reference point (a KL) stays >= 0.
    assert last(scalars, "val/rewards/margins") > 0.05
    assert last(scalars, "val/rewards/accuracies") > 0.55
    assert min(value for _, value in scalars["train/kl"]) >= 0.0
    evaluation = next(cb for cb in cli.trainer.callbacks if isinstance(cb, SampledEvaluation))
    baseline = evaluation.measure(cli.model.policy.reference, cli.datamodule)["eval/reward"]
    assert last(scalars, "eval/reward") > baseline + 0.1
    assert last(scalars, "eval/kl") > 0.0
