"""A ``ModelCheckpoint`` whose monitoring follows what the run actually logs."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from lightning import LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_info


class LoggedMetricCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` that keeps the best checkpoint by ``monitor`` when the run logs that metric,
    and otherwise the latest one (as without a monitor), saying once why.

    For metrics that exist only in some runs: ``eval/reward`` is logged only when the sampled
    evaluation has a reward that means something on the prompts (``SampledEvaluation``'s rule), so a
    recipe run on a user's prompts without one would otherwise stop at the first validation with
    Lightning's "could not find the monitored key". Arguments: Lightning's ``ModelCheckpoint``.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._said_why = False

    @contextlib.contextmanager
    def _following_logged(self, trainer: Trainer) -> Iterator[None]:
        monitor = self.monitor
        if monitor is None or monitor in trainer.callback_metrics:
            yield
            return
        if not self._said_why:
            self._said_why = True
            rank_zero_info(
                f"lit_align: {type(self).__name__} keeps the latest checkpoint, not the best by {monitor!r}: the run does not log "
                f"{monitor!r} (logged: {sorted(trainer.callback_metrics)}). For eval/reward, give the algorithm or the evaluation callback "
                "a reward that scores these prompts."
            )
        self.monitor = None  # Lightning's own path without a monitor: save_top_k = 1 keeps the latest
        try:
            yield
        finally:
            self.monitor = monitor

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        with self._following_logged(trainer):
            super().on_validation_end(trainer, pl_module)

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        with self._following_logged(trainer):
            super().on_train_epoch_end(trainer, pl_module)
