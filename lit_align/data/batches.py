"""Typed batches: dataclasses of tensors (Lightning moves dataclasses between devices as-is)."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class SequenceBatch:
    """Prompt+completion sequences; ``loss_mask`` is 1 on completion tokens only. Used by SFT."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    loss_mask: torch.Tensor

    def __len__(self) -> int:
        return self.input_ids.shape[0]


@dataclass
class PairwiseBatch(SequenceBatch):
    """B preference pairs as 2B rows: rows [0, B) are prompt+chosen, rows [B, 2B) prompt+rejected.

    Both halves go through ONE forward pass, as in the DPO reference code: half the kernel launches
    and identical padding/dropout treatment for the two sides of a pair.
    """

    @property
    def num_pairs(self) -> int:
        return self.input_ids.shape[0] // 2
