"""Supervised fine-tuning on demonstrations: the starting point (and reference) of every other method."""

from __future__ import annotations

from typing import Any

import torch

from lit_align.algorithms.base import AlignmentModule
from lit_align.data.batches import SequenceBatch
from lit_align.losses import sft_loss


class SFT(AlignmentModule):
    """Token-level NLL on completions (prompt tokens masked). Holds no reference model."""

    default_reference = "none"
    supported_references = ("none",)
    unsupported_reference_reason = "SFT is plain maximum likelihood and never reads a reference"

    def compute_loss(self, batch: SequenceBatch, stage: str) -> tuple[torch.Tensor, dict[str, Any]]:
        logps = self.policy.policy_logps(batch.input_ids, batch.attention_mask, batch.loss_mask)
        loss = sft_loss(logps)
        return loss, {"ppl": loss.detach().exp()}
