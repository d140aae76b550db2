"""Tensor helpers shared by every algorithm.

Per-sequence log-probabilities from full logits (``sequence_logps``), used by ``head.completion_logps``
(the one entry point algorithms call) on its full-logits path, so no algorithm re-implements gather/mask.
"""

from __future__ import annotations

from typing import NamedTuple

import torch


class SequenceLogps(NamedTuple):
    """Per-sequence completion log-probabilities.

    ``sum`` is log pi(y|x) summed over completion tokens; ``count`` the number of those tokens,
    so a length-normalised variant (IPO as TRL runs it, ORPO, SimPO) is ``sum / count``.
    """

    sum: torch.Tensor
    count: torch.Tensor

    @property
    def mean(self) -> torch.Tensor:
        return self.sum / self.count.clamp(min=1)


def sequence_logps(logits: torch.Tensor, input_ids: torch.Tensor, loss_mask: torch.Tensor) -> SequenceLogps:
    """Sum of log pi(token_t | tokens_<t) over the positions where ``loss_mask`` is 1.

    ``logits`` [B, T, V] come from a causal LM on ``input_ids`` [B, T]; ``loss_mask`` [B, T] marks the
    completion tokens (prompt and padding are 0). Logits are upcast to fp32 before the log-softmax:
    in bf16 the log-softmax of a 32k-way vocabulary loses ~2 digits, which is larger than the
    log-ratio differences DPO-style losses are built from.
    """
    mask = loss_mask[:, 1:].to(torch.float32)
    logps = token_logps(logits, input_ids)
    return SequenceLogps(sum=(logps * mask).sum(-1), count=mask.sum(-1))


def token_logps(logits: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
    """Per-token log pi(token_t | tokens_<t), shape [B, T-1], in fp32, from full logits [B, T, V]
    (the full head's path, and the oracle the compact and prefix-shared heads are tested against)."""
    logits = logits[:, :-1].to(torch.float32)
    labels = input_ids[:, 1:]
    # log_softmax(x)[y] = x[y] - logsumexp(x): avoids materialising a [B, T, V] log-prob tensor twice.
    return torch.gather(logits, -1, labels.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, -1)


def log1mexp(x: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(x)) for x <= 0, stable at both ends (Maechler 2012).

    The naive ``log(1 - exp(x))`` returns -inf (and NaN gradients) once exp(x) rounds to 1, which
    happens for x > -6e-8 in fp32 — a log-prob that close to 0 is ordinary for a confident model.
    """
    x = x.to(torch.float32).clamp(max=-torch.finfo(torch.float32).tiny)
    near_zero = x > -0.6931471805599453
    # Each branch only sees inputs where it is stable: torch.where would otherwise back-propagate
    # 0 * inf = NaN from the branch it did not select.
    a = torch.log(-torch.expm1(torch.where(near_zero, x, torch.full_like(x, -1.0))))
    b = torch.log1p(-torch.exp(torch.where(near_zero, torch.full_like(x, -1.0), x)))
    return torch.where(near_zero, a, b)


def pad_right(sequences: list[list[int]], pad_value: int, length: int | None = None) -> torch.Tensor:
    """Stack variable-length id lists into a [N, length] tensor, padding on the right."""
    length = max((len(s) for s in sequences), default=0) if length is None else length
    out = torch.full((len(sequences), length), pad_value, dtype=torch.long)
    for row, seq in enumerate(sequences):
        out[row, : len(seq)] = torch.as_tensor(seq[:length], dtype=torch.long)
    return out


def pad_left(sequences: list[list[int]], pad_value: int) -> torch.Tensor:
    """Stack id lists padded on the left: what decoder-only ``generate`` needs for prompts."""
    length = max((len(s) for s in sequences), default=0)
    out = torch.full((len(sequences), length), pad_value, dtype=torch.long)
    for row, seq in enumerate(sequences):
        if seq:
            out[row, length - len(seq) :] = torch.as_tensor(seq, dtype=torch.long)
    return out
