"""Padding efficiency: how much of each training batch is padding (compute spent on nothing)."""

from __future__ import annotations

from typing import Any

from lightning import Callback, LightningModule, Trainer


def padding_fraction(attention_mask) -> float:
    """Share of positions in a [rows, T] batch that are padding (attention_mask == 0)."""
    return 1.0 - float(attention_mask.float().mean()) if attention_mask.numel() else 0.0


class PaddingStats(Callback):
    """Log ``train/padding_fraction`` (pad tokens / all tokens of the batch) and ``train/tokens``
    (real tokens, summed over the run) for every training batch.

    Batches are padded to their longest row (dynamic padding), so the fraction measures how well
    rows of similar length are grouped: compare ``group_by_length`` on and off in TensorBoard.
    """

    def __init__(self) -> None:
        self.tokens = 0
        self.padded = 0

    @property
    def run_padding_fraction(self) -> float:
        """Padding share over every batch seen so far (token-weighted)."""
        return 1.0 - self.tokens / self.padded if self.padded else 0.0

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        mask = getattr(batch, "attention_mask", None)
        if mask is None:
            return
        real = int(mask.sum())
        self.tokens += real
        self.padded += mask.numel()
        pl_module.log("train/padding_fraction", padding_fraction(mask), on_step=True, on_epoch=False, batch_size=mask.shape[0])
        pl_module.log("train/tokens", float(self.tokens), on_step=True, on_epoch=False, reduce_fx="max", batch_size=mask.shape[0])
