"""Building padded sequence tensors from (prompt ids, completion ids) pairs."""

from __future__ import annotations

import torch

from lit_align.ops import pad_right


def sequences_with_mask(prompts: list[list[int]], completions: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask, loss_mask), right-padded to the longest row in the batch.

    ``loss_mask`` is 1 exactly on completion tokens: prompt tokens and padding never reach a loss.
    """
    rows = [p + c for p, c in zip(prompts, completions)]
    input_ids = pad_right(rows, pad_id)
    attention_mask = pad_right([[1] * len(r) for r in rows], 0, input_ids.shape[1])
    loss_mask = pad_right([[0] * len(p) + [1] * len(c) for p, c in zip(prompts, completions)], 0, input_ids.shape[1])
    return input_ids, attention_mask, loss_mask
