"""Supervised fine-tuning: token-level negative log-likelihood of the completion."""

from __future__ import annotations

import torch

from lit_align.ops import SequenceLogps


def sft_loss(logps: SequenceLogps) -> torch.Tensor:
    """Mean NLL per completion token over the batch: -sum_i log pi(y_i|x_i) / sum_i |y_i|.

    Token-weighted (not a mean of per-sequence means) so long and short completions count per token,
    as in standard causal-LM training; returns a scalar. ORPO's NLL uses the same convention; DPO's
    ``nll_weight`` term is per pair on purpose (docs/kto_orpo.md, "NLL conventions").
    """
    return -logps.sum.sum() / logps.count.sum().clamp(min=1)
