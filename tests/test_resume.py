"""Exact resume: stopping mid-epoch (SIGTERM) and resuming with --ckpt_path last reproduces the
per-step losses of an uninterrupted run; the batch sampler behind it is seeded, resumable and
(optionally) length-grouped."""

from __future__ import annotations

import os
import signal

import pytest
import torch
from lightning import Callback

from lit_align.data.samplers import ResumableBatchSampler, ResumableDataLoader
from lit_align.utils.scalars import read_scalars
from tests.conftest import run_cli

STEPS_PER_EPOCH = 6  # 48 examples / batch 8
PREEMPT_AT = 4  # mid-epoch 0, after the mid-epoch validation at step 3

# A small, complete run: SFT of the micro model, mid-epoch validation, ModelCheckpoint(save_last).
TINY_SFT = """
seed_everything: 0
trainer:
  max_epochs: 2
  val_check_interval: 0.5
  log_every_n_steps: 1
  gradient_clip_val: 1.0
  enable_progress_bar: false
  enable_model_summary: false
  logger:
    class_path: lightning.pytorch.loggers.TensorBoardLogger
    init_args: {save_dir: runs}
  callbacks:
    - class_path: lightning.pytorch.callbacks.ModelCheckpoint
      init_args: {save_last: true, monitor: val/loss, mode: min}
model:
  class_path: lit_align.algorithms.SFT
  init_args:
    model: embedded:micro
    lr_schedule: cosine
    optimizer: {class_path: torch.optim.AdamW, init_args: {lr: 0.003}}
data:
  class_path: lit_align.data.sft.SFTDataModule
  init_args: {num_examples: 48, num_val_examples: 8, max_length: 48, max_prompt_length: 16, batch_size: 8}
"""


class SigtermAt(Callback):
    """Sends this process SIGTERM after optimiser step ``step``: Lightning's real preemption path."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGTERM)


def tiny_sft_config(directory) -> str:
    path = os.path.join(str(directory), "tiny_sft.yaml")
    with open(path, "w") as f:
        f.write(TINY_SFT)
    return path


def sft_args(config: str, *extra: str) -> list[str]:
    return ["fit", "--config", config, *extra]


def train_losses(root: str) -> dict[int, float]:
    """train/loss by step, merged over every version_N folder of the run (a resumed run adds one)."""
    losses: dict[int, float] = {}
    run_dir = os.path.join(root, "sft")
    for version in sorted(os.listdir(run_dir)):
        for step, value in read_scalars(os.path.join(run_dir, version)).get("train/loss", []):
            losses[step] = value
    return losses


@pytest.mark.slow
def test_sigterm_then_resume_reproduces_uninterrupted_losses(tmp_path):
    config = tiny_sft_config(tmp_path)
    full_root, split_root = str(tmp_path / "full"), str(tmp_path / "split")
    run_cli(sft_args(config), full_root)
    full = train_losses(full_root)
    assert sorted(full) == list(range(2 * STEPS_PER_EPOCH))

    stop = '--trainer.callbacks+={"class_path": "tests.test_resume.SigtermAt", "init_args": {"step": %d}}' % PREEMPT_AT
    with pytest.raises(SystemExit):  # Lightning's SIGTERMException
        run_cli(sft_args(config, stop), split_root)
    checkpoints = os.path.join(split_root, "sft", "version_0", "checkpoints")
    assert "preempted.ckpt" in os.listdir(checkpoints)
    state = torch.load(os.path.join(checkpoints, "preempted.ckpt"), weights_only=True)
    assert state["global_step"] == PREEMPT_AT
    assert state["SFTDataModule"]["train_loader"] == {"epoch": 0, "consumed": PREEMPT_AT, "num_batches": STEPS_PER_EPOCH, "seed": 0}

    cli = run_cli(sft_args(config, "--ckpt_path=last"), split_root)
    assert cli.trainer.global_step == 2 * STEPS_PER_EPOCH
    resumed = train_losses(split_root)
    assert sorted(resumed) == sorted(full)
    # Every step, before and after the interruption and across the epoch boundary, matches.
    for step in sorted(full):
        assert resumed[step] == pytest.approx(full[step], rel=1e-6, abs=1e-7), f"step {step}"


def test_sampler_is_deterministic_per_epoch_and_covers_data():
    sampler = ResumableBatchSampler(list(range(50)), batch_size=8, seed=3)
    epoch0 = list(sampler)
    assert epoch0 == list(ResumableBatchSampler(list(range(50)), batch_size=8, seed=3))
    assert len(epoch0) == len(sampler) == 6 and all(len(b) == 8 for b in epoch0)
    assert len({i for b in epoch0 for i in b}) == 48  # no repeats; the last 2 are dropped
    sampler.set_epoch(1)
    assert list(sampler) != epoch0
    assert epoch0 != list(ResumableBatchSampler(list(range(50)), batch_size=8, seed=4))


def test_loader_state_resumes_at_the_next_unseen_batch():
    data = list(range(40))
    make = lambda: ResumableDataLoader(data, ResumableBatchSampler([1] * 40, batch_size=4, seed=0), collate_fn=lambda b: b)
    full = list(make())
    loader = make()
    iterator = iter(loader)
    seen = [next(iterator) for _ in range(3)]
    state = loader.state_dict()
    assert state["consumed"] == 3 and state["epoch"] == 0
    fresh = make()
    fresh.load_state_dict(state)
    assert seen + list(fresh) == full
    # A state from an earlier epoch does not skip anything in the current one.
    other = make()
    other.load_state_dict(state)
    other.batch_sampler.set_epoch(1)
    assert len(list(other)) == 10


def test_group_by_length_cuts_padding_and_stays_seeded():
    generator = torch.Generator().manual_seed(0)
    lengths = torch.randint(4, 200, (512,), generator=generator).tolist()

    def padding_fraction(batches):
        padded = sum(len(b) * max(lengths[i] for i in b) for b in batches)
        return 1 - sum(lengths[i] for b in batches for i in b) / padded

    plain = list(ResumableBatchSampler(lengths, 16, seed=0))
    grouped = list(ResumableBatchSampler(lengths, 16, seed=0, group_by_length=True, bucket_batches=8))
    assert grouped == list(ResumableBatchSampler(lengths, 16, seed=0, group_by_length=True, bucket_batches=8))
    assert sorted(i for b in grouped for i in b) == sorted(i for b in plain for i in b)
    assert padding_fraction(grouped) < 0.15 and padding_fraction(plain) > 0.35
    # Batch order is shuffled: the first batches are not simply the longest.
    maxima = [max(lengths[i] for i in b) for b in grouped]
    assert maxima != sorted(maxima, reverse=True)


def test_ranks_get_disjoint_shards_of_each_step():
    shards = [list(ResumableBatchSampler(list(range(64)), 4, seed=1, num_replicas=2, rank=r)) for r in (0, 1)]
    assert len(shards[0]) == len(shards[1]) == 8
    for a, b in zip(*shards):
        assert len(a) == len(b) == 4 and not set(a) & set(b)
