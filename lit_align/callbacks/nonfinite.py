"""Non-finite guard: a NaN/Inf loss or gradient never reaches the weights.

One bad step (an fp overflow, a corrupt row, a learning rate too high) turns every weight into NaN,
and the run then trains on garbage for hours while the loss curve just stops. The guard looks at
the loss before backward and at the gradients before the optimiser step; on a non-finite value it
drops that update (parameters whose ``.grad`` is None are left untouched by torch optimisers,
moments included), then either stops with a checkpoint and a message naming the step and batch,
or skips the step and goes on.
"""

from __future__ import annotations

import os
from typing import Any, Literal

import torch
from lightning import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_warn

from lit_align.callbacks.preemption import checkpoint_dir


class NonFiniteError(FloatingPointError):
    """Raised when the loss or a gradient is NaN/Inf and ``action='stop'``."""


class NonFiniteGuard(Callback):
    """Stop (default) or skip the step when the training loss or a gradient is NaN/Inf.

    Args:
        action: ``stop`` saves a checkpoint (weights from before the bad step) and raises
            :class:`NonFiniteError`; ``skip`` drops the update, warns and continues.
        check_gradients: Also check gradients (one reduction per step). Off automatically with
            fp16 mixed precision, whose gradient scaler already skips steps with inf gradients.
        max_consecutive_skips: With ``skip``, stop anyway after this many bad steps in a row: the
            run has diverged and skipping would only hide it.
    """

    def __init__(self, action: Literal["stop", "skip"] = "stop", check_gradients: bool = True, max_consecutive_skips: int = 10) -> None:
        self.action = action
        self.check_gradients = check_gradients
        self.max_consecutive_skips = max_consecutive_skips
        self.skipped: list[int] = []
        self._consecutive = 0
        self._bad_loss = False
        self._problem: tuple[str, int] | None = None
        self._partial = False
        self._batch_idx = 0

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        self._batch_idx = batch_idx

    def on_before_backward(self, trainer: Trainer, pl_module: LightningModule, loss: torch.Tensor) -> None:
        if not bool(torch.isfinite(loss.detach()).all()):
            self._bad_loss = True

    def on_before_optimizer_step(self, trainer: Trainer, pl_module: LightningModule, optimizer: torch.optim.Optimizer) -> None:
        params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        problem = "loss" if self._bad_loss else None
        if problem is None and self.check_gradients and not str(trainer.precision).startswith("16") and params:
            if not bool(torch.stack([torch.isfinite(p.grad).all() for p in params]).all()):
                problem = "gradient"
        self._bad_loss = False
        if problem is not None:
            for p in params:
                p.grad = None  # the optimiser then skips these parameters entirely
            self._problem = (problem, trainer.global_step)
            # optimizer_in_backward (lit_align.optim.in_backward): parameters whose finite gradients came
            # before the bad one were already updated inside backward; only the rest can be held back.
            self._partial = problem == "gradient" and bool(pl_module.hparams.get("optimizer_in_backward", False))

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self._problem is None:
            self._consecutive = 0
            return
        (problem, step), self._problem = self._problem, None  # step: the optimiser step it would have been
        where = f"non-finite {problem} at global step {step} (epoch {trainer.current_epoch}, batch {batch_idx})"
        self._consecutive += 1
        self.skipped.append(step)
        pl_module.log("train/nonfinite_skipped", float(len(self.skipped)), on_step=True, on_epoch=False)
        partial = " (with optimizer_in_backward: for the parameters with non-finite gradients; those whose gradients were final before them in that backward were updated)" if self._partial else ""
        if self.action == "skip" and self._consecutive <= self.max_consecutive_skips:
            rank_zero_warn(f"lit_align: {where}; the update was skipped{partial} ({len(self.skipped)} so far).")
            return
        path = os.path.join(checkpoint_dir(trainer), f"nonfinite-step={step}.ckpt")
        trainer.save_checkpoint(path)
        reason = f"{self._consecutive} consecutive bad steps" if self.action == "skip" else "nonfinite.action=stop"
        raise NonFiniteError(
            f"lit_align: {where} ({reason}). The update was not applied{partial}; a checkpoint with the weights "
            f"{'as they are now' if self._partial else 'from before it'} is at {path}. "
            "Usual fixes: lower the learning rate, use bf16 instead of fp16, keep gradient_clip_val, check the batch's data; "
            "then resume with --ckpt_path <that file>, or pass --nonfinite.action=skip to skip such steps."
        )
