"""The second plug-in example, examples/slic.py (SLiC-HF, arXiv 2305.10425, Eq. 1): its loss, and a
short run through the real command line with nothing but its YAML and tiny overrides."""

from __future__ import annotations

import glob
import os

import pytest
import torch

from benchmarks.workload import write_pairs
from lit_align.algorithms import PairLogps, SequenceLogps
from lit_align.errors import ConfigError
from lit_align.utils.scalars import read_scalars
from tests.conftest import REPO, cli_in_process


def test_slic_loss_is_the_hinge_on_the_margin_plus_the_regulariser():
    from examples.slic import SLiC

    module = SLiC(model="embedded:micro", delta=1.0, reg_weight=0.5)
    ones = torch.ones(2)
    chosen, rejected = torch.tensor([-3.0, -1.0], requires_grad=True), torch.tensor([-3.5, -4.0], requires_grad=True)
    out, logs = module.pair_loss(PairLogps(SequenceLogps(chosen, ones), SequenceLogps(rejected, ones), None, None))
    # Pair 0: margin 0.5 < delta, hinge 0.5; pair 1: margin 3 >= delta, hinge 0. Regulariser: -0.5 * log pi(y_w|x).
    torch.testing.assert_close(out.losses, torch.tensor([0.5 + 1.5, 0.0 + 0.5]))
    assert logs["calibration_loss"].item() == pytest.approx(0.25)
    torch.testing.assert_close(out.chosen_rewards, chosen.detach())
    torch.testing.assert_close(out.rejected_rewards, rejected.detach())
    out.losses.sum().backward()
    # d/d chosen: -1 from an active hinge, -0.5 from the regulariser; the rejected side moves only through the hinge.
    torch.testing.assert_close(chosen.grad, torch.tensor([-1.5, -0.5]))
    torch.testing.assert_close(rejected.grad, torch.tensor([1.0, 0.0]))
    with pytest.raises(ConfigError, match=r"SLiC: reference must be none, got 'copy'"):
        SLiC(model="embedded:micro", reference="copy")


def test_slic_trains_through_the_command_line(tmp_path, monkeypatch, capfd):
    data = write_pairs(str(tmp_path / "pairs.jsonl"), 16, seed=1)
    args = [
        "fit", "--config", "examples/slic.yaml",
        "--model.init_args.model=embedded:micro", "--model.init_args.delta=30", "--model.init_args.optimizer.init_args.lr=0.003",
        f"--data.init_args.dataset={data}", "--data.init_args.val_fraction=0.2", "--data.init_args.batch_size=4",
        "--trainer.max_epochs=2", "--trainer.val_check_interval=1.0", "--trainer.log_every_n_steps=1", "--trainer.enable_progress_bar=false",
        f"--trainer.logger.init_args.save_dir={tmp_path / 'runs'}", f"--trainer.default_root_dir={tmp_path}",
    ]
    # ``python -m lit_align fit`` from the repository (examples/ importable from there): its ``cli_main``, in-process.
    monkeypatch.chdir(REPO)
    code, _, err = cli_in_process(capfd, *args)
    assert code == 0, err[-3000:]
    (log_dir,) = glob.glob(str(tmp_path / "runs" / "slic" / "version_*"))
    scalars = read_scalars(log_dir)
    assert len(scalars["train/loss"]) >= 4 and all(torch.isfinite(torch.tensor(v)) for _, v in scalars["train/loss"])
    # The same validation pairs after each epoch: the loss falls, the calibrated margin grows.
    (_, loss_1), (_, loss_2) = scalars["val/loss"]
    (_, margin_1), (_, margin_2) = scalars["val/rewards/margins"]
    (_, hinge_1), (_, hinge_2) = scalars["val/calibration_loss"]
    assert loss_2 < loss_1 and hinge_2 < hinge_1 and margin_2 > margin_1
    assert os.path.exists(os.path.join(log_dir, "hf_model", "model.safetensors"))  # exported like any algorithm
