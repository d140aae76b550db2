"""Resumable runs: a checkpoint on SIGTERM and Ctrl-C, RNG states in every checkpoint, ``--ckpt_path last`` across runs.

Schedulers (SLURM, Kubernetes, spot instances) send SIGTERM some seconds before killing a job.
Lightning's own handler only records the signal (``trainer.received_sigterm``) and, once the current
batch is complete, raises ``SIGTERMException``; this callback saves a checkpoint on the way out, so
that ``--ckpt_path last`` continues exactly there: same weights, optimiser and scheduler, same
position in the (resumable) train loader, same RNG states. The first Ctrl-C (SIGINT) takes the same
path; a second one stops at once and says what was lost. The CLI then exits 128 + the signal number
(143 for SIGTERM, 130 for Ctrl-C), so schedulers and shell chains see an unfinished run.
"""

from __future__ import annotations

import glob
import os
import random
import re
import signal
import sys
from typing import Any

import numpy as np
import torch
from lightning import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.exceptions import SIGTERMException

from lit_align.checkpoint_io import IDENTITY_KEY, TEMP_MARK, identity, unreadable_reason

PREEMPTED_NAME = "preempted.ckpt"
LAST_PATTERN = re.compile(r"^last(-v\d+)?\.ckpt$")


def checkpoint_dir(trainer: Trainer) -> str:
    """The run's checkpoint folder: ModelCheckpoint's, else ``<log_dir>/checkpoints``."""
    for callback in trainer.checkpoint_callbacks:
        if isinstance(callback, ModelCheckpoint) and callback.dirpath:
            return str(callback.dirpath)
    return os.path.join(trainer.log_dir or trainer.default_root_dir, "checkpoints")


def find_last_checkpoint(trainer: Trainer, quiet: bool = False) -> str | None:
    """Newest readable ``last*.ckpt`` or ``preempted.ckpt`` of this run name, across all ``version_N`` folders.

    Lightning's own ``ckpt_path="last"`` only looks in the *new* run's folder (a fresh ``version_N``),
    so a relaunched job would silently start from scratch.
    """
    quiet = quiet or not trainer.is_global_zero  # every rank resolves `last`; one says so
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
    for folder in set(folders):
        leftovers = glob.glob(os.path.join(folder, f"*{TEMP_MARK}*"))
        if leftovers and not quiet:
            print(f"lit_align: warning: {', '.join(sorted(leftovers))}: partial save(s) of a killed run; "
                  "safe to delete unless a run of this name is saving right now.", file=sys.stderr)
    # Newest first; a save that was killed or ran out of disk (before atomic saves, or by another
    # tool) leaves an unreadable file: skip it, say so, and take the next one.
    for path in sorted(found, key=os.path.getmtime, reverse=True):
        reason = unreadable_reason(path)
        if reason is None:
            return path
        if not quiet:
            print(f"lit_align: warning: --ckpt_path last skips {path}: {reason} (a save was interrupted); "
                  "looking for an older checkpoint.", file=sys.stderr)
    return None


class Preemption(Callback):
    """Save a resumable checkpoint on SIGTERM or Ctrl-C before the run exits; keep RNG states in every checkpoint.

    Resume with ``--ckpt_path last`` (the CLI resolves it to the newest readable ``last``/``preempted``
    checkpoint of the run name, see :func:`find_last_checkpoint`).

    Args:
        filename: Checkpoint file name inside the run's checkpoint folder.
    """

    def __init__(self, filename: str = PREEMPTED_NAME) -> None:
        self.filename = filename
        self.saved_path: str | None = None
        self.signal_number: int | None = None  # the signal that stopped the run, for the exit status
        self._trainer: Trainer | None = None
        self._previous_sigint: Any = None

    def _save(self, trainer: Trainer) -> None:
        path = os.path.join(checkpoint_dir(trainer), self.filename)
        trainer.save_checkpoint(path)
        self.saved_path = path
        what = "Ctrl-C (SIGINT)" if self.signal_number == signal.SIGINT else "SIGTERM"
        rank_zero_info(
            f"lit_align: {what} received at global step {trainer.global_step} (epoch {trainer.current_epoch}); saved a resumable checkpoint to {path}. "
            "Resume by running the same command with --ckpt_path last."
        )

    # Ctrl-C: the first one asks Lightning to stop after the current batch, exactly as SIGTERM does
    # (a KeyboardInterrupt mid-step would leave weights and loop counters inconsistent); the second
    # one is a plain KeyboardInterrupt for a user who cannot wait.
    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._trainer = trainer
        try:
            self._previous_sigint = signal.signal(signal.SIGINT, self._on_sigint)
        except ValueError:  # not the main thread (e.g. a notebook's worker): keep the default
            self._previous_sigint = None

    def _on_sigint(self, signum: int, frame: Any) -> None:
        connector = getattr(self._trainer, "_signal_connector", None)
        if self.signal_number == signal.SIGINT or connector is None:
            raise KeyboardInterrupt
        self.signal_number = signal.SIGINT
        connector.received_sigterm = True  # Lightning's graceful stop at the next batch boundary
        os.write(2, b"\nlit_align: Ctrl-C: stopping after the current batch and saving a resumable checkpoint "
                    b"(press Ctrl-C again to stop at once, losing the steps since the last checkpoint).\n")

    def _restore_sigint(self) -> None:
        if self._previous_sigint is not None:
            signal.signal(signal.SIGINT, self._previous_sigint)
            self._previous_sigint = None

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._restore_sigint()

    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self._restore_sigint()

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        self._restore_sigint()
        if trainer.state.fn != "fit":
            return
        # Lightning raises SIGTERMException once the current batch is complete (or from inside
        # validation): every loop counter is consistent there, and nothing is saved after us.
        if isinstance(exception, SIGTERMException):
            if self.signal_number is None:
                self.signal_number = signal.SIGTERM
            try:
                self._save(trainer)
            except KeyboardInterrupt:  # a second Ctrl-C during the save: the atomic save left nothing partial
                if trainer.is_global_zero:
                    print(interrupted_message(trainer), file=sys.stderr)
                raise
        elif isinstance(exception, KeyboardInterrupt) and trainer.is_global_zero:
            self.signal_number = signal.SIGINT
            print(interrupted_message(trainer), file=sys.stderr)

    def on_save_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]) -> None:
        # What the checkpoint is of, so that `--ckpt_path last` cannot cross algorithms (lit_align.checkpoint_io).
        checkpoint[IDENTITY_KEY] = identity(pl_module, trainer.datamodule)

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


def interrupted_message(trainer: Trainer) -> str:
    """What a hard stop lost, and where ``--ckpt_path last`` will resume."""
    last = find_last_checkpoint(trainer, quiet=True)
    head = f"lit_align: interrupted at global step {trainer.global_step} without saving: "
    if last is None:
        return head + "no checkpoint of this run exists, so a rerun starts from scratch."
    step = torch.load(last, map_location="cpu", weights_only=True, mmap=True).get("global_step")
    return head + (f"the {trainer.global_step - step} step(s) since the last checkpoint are lost. "
                   f"--ckpt_path last resumes from {last} (global step {step}).")


def exit_status(trainer: Trainer | None) -> int:
    """128 + the signal that stopped the run (143 SIGTERM, 130 SIGINT), the shell's convention."""
    for callback in getattr(trainer, "callbacks", None) or []:
        if isinstance(callback, Preemption) and callback.signal_number is not None:
            return 128 + int(callback.signal_number)
    return 128 + int(signal.SIGTERM)
