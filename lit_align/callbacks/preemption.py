"""Resumable runs: a checkpoint on SIGTERM, RNG states in every checkpoint, ``--ckpt_path last`` across runs.

Schedulers (SLURM, Kubernetes, spot instances) send SIGTERM some seconds before killing a job.
Lightning's own handler only records the signal (``trainer.received_sigterm``) and, once the current
batch is complete, raises ``SIGTERMException``; this callback saves a checkpoint on the way out, so
that ``--ckpt_path last`` continues exactly there: same weights, optimiser and scheduler, same
position in the (resumable) train loader, same RNG states.
"""

from __future__ import annotations

import glob
import os
import random
import re
from typing import Any

import numpy as np
import torch
from lightning import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.exceptions import SIGTERMException

PREEMPTED_NAME = "preempted.ckpt"
LAST_PATTERN = re.compile(r"^last(-v\d+)?\.ckpt$")


def checkpoint_dir(trainer: Trainer) -> str:
    """The run's checkpoint folder: ModelCheckpoint's, else ``<log_dir>/checkpoints``."""
    for callback in trainer.checkpoint_callbacks:
        if isinstance(callback, ModelCheckpoint) and callback.dirpath:
            return str(callback.dirpath)
    return os.path.join(trainer.log_dir or trainer.default_root_dir, "checkpoints")


def find_last_checkpoint(trainer: Trainer) -> str | None:
    """Newest ``last*.ckpt`` or ``preempted.ckpt`` of this run name, across all ``version_N`` folders.

    Lightning's own ``ckpt_path="last"`` only looks in the *new* run's folder (a fresh ``version_N``),
    so a relaunched job would silently start from scratch.
    """
    folders = []
    logger = trainer.loggers[0] if trainer.loggers else None
    if logger is not None and logger.save_dir is not None:
        folders += glob.glob(os.path.join(str(logger.save_dir), str(logger.name), "*", "checkpoints"))
    else:
        folders.append(os.path.join(trainer.default_root_dir, "checkpoints"))
    folders += [str(cb.dirpath) for cb in trainer.checkpoint_callbacks if isinstance(cb, ModelCheckpoint) and cb.dirpath]
    found = [
        os.path.join(folder, name)
        for folder in set(folders)
        if os.path.isdir(folder)
        for name in os.listdir(folder)
        if name == PREEMPTED_NAME or LAST_PATTERN.match(name)
    ]
    return max(found, key=os.path.getmtime) if found else None


class Preemption(Callback):
    """Save a resumable checkpoint on SIGTERM before the run exits; keep RNG states in every checkpoint.

    Resume with ``--ckpt_path last`` (the CLI resolves it to the newest ``last``/``preempted``
    checkpoint of the run name, see :func:`find_last_checkpoint`).

    Args:
        filename: Checkpoint file name inside the run's checkpoint folder.
    """

    def __init__(self, filename: str = PREEMPTED_NAME) -> None:
        self.filename = filename
        self.saved_path: str | None = None

    def _save(self, trainer: Trainer) -> None:
        path = os.path.join(checkpoint_dir(trainer), self.filename)
        trainer.save_checkpoint(path)
        self.saved_path = path
        rank_zero_info(
            f"lit_align: SIGTERM received at global step {trainer.global_step} (epoch {trainer.current_epoch}); saved a resumable checkpoint to {path}. "
            "Resume by running the same command with --ckpt_path last."
        )

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        # Lightning raises SIGTERMException once the current batch is complete (or from inside
        # validation): every loop counter is consistent there, and nothing is saved after us.
        if isinstance(exception, SIGTERMException) and trainer.state.fn == "fit":
            self._save(trainer)

    # RNG states: Lightning does not checkpoint them; a resumed run must draw the same dropout masks.
    # Stored as tensors and plain Python values so checkpoints load with torch.load(weights_only=True).
    def state_dict(self) -> dict[str, Any]:
        name, keys, position, has_gauss, cached_gaussian = np.random.get_state()
        numpy_state = [name, torch.from_numpy(keys.astype(np.int64)), int(position), int(has_gauss), float(cached_gaussian)]
        state = {"python": random.getstate(), "numpy": numpy_state, "torch": torch.get_rng_state()}
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if "python" in state_dict:
            version, internal, gauss = state_dict["python"]
            random.setstate((version, tuple(internal), gauss))
            name, keys, position, has_gauss, cached_gaussian = state_dict["numpy"]
            np.random.set_state((name, keys.numpy().astype(np.uint32), position, has_gauss, cached_gaussian))
            torch.set_rng_state(state_dict["torch"])
        if "cuda" in state_dict and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state_dict["cuda"])
