"""Checkpoint files that are whole or absent: atomic saves, readability checks, what a checkpoint is of.

Lightning's ``TorchCheckpointIO`` writes through an fsspec transaction whose temp file lives in the
system temp folder; when that is another filesystem, the commit is a truncate-and-copy over the old
checkpoint, so a kill during the copy leaves ``last.ckpt`` at 0 bytes, and a full disk leaves a
truncated ``step=N.ckpt``. Here the temp file sits beside the checkpoint and ``os.replace`` (atomic
on one filesystem) swaps it in: the checkpoint path holds the old file or the new one, never a part.
"""

from __future__ import annotations

import errno
import os
import zipfile
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from lit_align.errors import ConfigError, UserError

TEMP_MARK = ".tmp-"  # <name>.tmp-<pid>: a save in progress, or one that was killed
# Errors of the machine, not of the code: the user fixes them (space, permissions), one paragraph.
DISK_ERRNOS = {errno.ENOSPC: "no space left on the device", errno.EDQUOT: "disk quota exceeded",
               errno.EROFS: "the filesystem is read-only", errno.EACCES: "permission denied", errno.EPERM: "permission denied"}


def temp_path(path: str) -> str:
    return f"{path}{TEMP_MARK}{os.getpid()}"


def atomic_torch_save(checkpoint: dict[str, Any], path: str) -> None:
    """``torch.save`` to a temp file beside ``path``, flushed to disk, then ``os.replace`` it.

    On any failure (full disk, kill signal turned exception, Ctrl-C) the temp file is removed and
    ``path`` is untouched. A disk error becomes a ``UserError`` saying what happened and that the
    earlier checkpoints are intact.
    """
    path = os.fspath(path)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    temp = temp_path(path)
    try:
        with open(temp, "wb") as f:
            torch.save(checkpoint, f)
            f.flush()
            os.fsync(f.fileno())  # the rename must not reach the disk before the data does
        os.replace(temp, path)
    except BaseException as error:
        _remove(temp)
        if isinstance(error, OSError) and error.errno in DISK_ERRNOS:
            raise UserError(
                f"could not save the checkpoint {path}: {DISK_ERRNOS[error.errno]} ({error.strerror}). Nothing was "
                "written at that path (the partial file was removed) and the earlier checkpoints in that folder are "
                "intact. Free space (or fix the folder's permissions, or point --trainer.default_root_dir / the "
                "logger's save_dir elsewhere), then resume with the same command and --ckpt_path last."
            ) from error
        raise


def _remove(path: str) -> None:
    try:
        os.remove(path)
    except OSError:
        pass


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` whose saves are atomic on the checkpoint's own filesystem (see module doc)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if storage_options is not None or "://" in str(path):  # remote storage: Lightning's own path
            return super().save_checkpoint(checkpoint, path, storage_options)
        atomic_torch_save(checkpoint, str(path))


def use_atomic_saves(strategy) -> None:
    """Swap Lightning's default checkpoint IO for :class:`AtomicCheckpointIO`; a custom or sharded IO is kept."""
    if type(strategy.checkpoint_io) is TorchCheckpointIO:
        strategy.checkpoint_io = AtomicCheckpointIO()


def unreadable_reason(path: str) -> str | None:
    """Why ``path`` is not a complete ``torch.save`` file (None when it is).

    A save cut short lacks the zip's central directory, which ``torch.save`` writes last: opening the
    archive reads only that directory, so the check costs nothing even for a multi-GB checkpoint.
    """
    try:
        size = os.path.getsize(path)
        if size == 0:
            return "it is empty (0 bytes)"
        with zipfile.ZipFile(path) as archive:
            if not any(name.endswith("data.pkl") for name in archive.namelist()):
                return "it is not a torch checkpoint (no data.pkl)"
    except zipfile.BadZipFile:
        return f"it is truncated or corrupt ({size} bytes, no complete zip directory)"
    except OSError as error:
        return f"it cannot be read ({error.strerror})"
    return None


# ----- what a checkpoint is of ------------------------------------------------------------------------
IDENTITY_KEY = "lit_align"


def class_path(obj: Any) -> str | None:
    return None if obj is None else f"{type(obj).__module__}.{type(obj).__qualname__}"


def identity(model: Any, datamodule: Any) -> dict[str, str | None]:
    """Stored in every checkpoint (``Preemption.on_save_checkpoint``) so a resume can check it."""
    return {"algorithm": class_path(model), "datamodule": class_path(datamodule)}


def check_resume_matches(path: str, model: Any, datamodule: Any) -> None:
    """Refuse to resume a run of one algorithm/DataModule from another's checkpoint.

    Loading a KTO checkpoint into a DPO run succeeds silently (same policy weights, optimiser state
    and step), then trains DPO from KTO's state: raise a ``ConfigError`` naming both classes.
    """
    saved = torch.load(path, map_location="cpu", weights_only=True, mmap=True).get(IDENTITY_KEY)
    if not saved:  # written before this check existed, or by a plain Trainer
        return
    now = identity(model, datamodule)
    for field, what in (("algorithm", "algorithm"), ("datamodule", "DataModule")):
        if saved.get(field) and now[field] and saved[field] != now[field]:
            raise ConfigError(
                f"--ckpt_path {path} is a checkpoint of {what} {saved[field]}, but this run's {what} is {now[field]}: "
                f"resuming would continue the {saved[field].rsplit('.', 1)[-1]} run's weights, optimiser state and step as "
                f"{now[field].rsplit('.', 1)[-1]}. Use a different --run_name for this run (so `last` finds its own "
                "checkpoints), or give --ckpt_path the checkpoint of a run with the same algorithm and data; to start "
                "from another run's trained policy, point model.init_args.model at its exported hf_model folder."
            )
