"""A dry run (``--trainer.fast_dev_run``) as a user starts it, from their own folder: it writes nothing
there, and its start-up summary prints no FLOPs that were never measured."""

from __future__ import annotations

import os

import torch
from lightning import LightningModule, Trainer

from benchmarks.workload import write_pairs
from lit_align.callbacks import ModelSummary
from tests.conftest import REPO, cli_in_process


def test_fast_dev_run_writes_nothing_in_the_current_folder_and_no_zero_flops(tmp_path, monkeypatch, capfd):
    work = tmp_path / "work"
    work.mkdir()
    pairs = write_pairs(str(tmp_path / "pairs.jsonl"), 12, seed=1)
    args = ["--config", os.path.join(REPO, "configs", "dpo.yaml"), "--model.init_args.model=embedded:micro", f"--data.init_args.dataset={pairs}",
            "--data.init_args.val_fraction=0.25", "--data.init_args.batch_size=2", "--data.init_args.max_length=32",
            "--data.init_args.max_prompt_length=12", "--trainer.fast_dev_run=2", "--trainer.enable_progress_bar=false"]
    # ``python -m lit_align fit`` from the user's folder: its ``cli_main``, in-process.
    monkeypatch.chdir(work)
    monkeypatch.setenv("LIT_ALIGN_CACHE", str(tmp_path / "cache"))
    code, out, err = cli_in_process(capfd, "fit", *args)
    output = out + err
    assert code == 0, output[-3000:]
    # Lightning's ModelCheckpoint wrote ./checkpoints/last.ckpt here (save_last ignores fast_dev_run).
    assert os.listdir(work) == []
    # The summary is printed, without Lightning's column of zero FLOPs and "Total FLOPs: 0".
    assert "Trainable params" in output and "Total params" in output and "policy" in output
    assert "FLOPs" not in output and "Flops" not in output


class Linear(LightningModule):
    def __init__(self, with_example: bool) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(8, 4)
        self.example_input_array = torch.zeros(3, 8) if with_example else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


def test_summary_shows_flops_only_when_lightning_measured_them(capsys, caplog):
    for with_example in (False, True):
        trainer = Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False)
        ModelSummary().on_fit_start(trainer, Linear(with_example))
        captured = capsys.readouterr()
        shown = captured.out + captured.err + caplog.text
        caplog.clear()
        assert "Total params" in shown
        # measured: 3 rows x 8 inputs x 4 outputs multiply-adds = 2 * 96 = 192 FLOPs
        assert ("192" in shown and "FLOPs" in shown) if with_example else ("FLOPs" not in shown and "Flops" not in shown)
