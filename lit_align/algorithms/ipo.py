"""IPO (arXiv 2310.12036)."""

from __future__ import annotations

from typing import Any

import torch

from lit_align.algorithms.pairwise import PairLogps, PairwiseAlignmentModule
from lit_align.losses import DPOOutput, ipo_loss


class IPO(PairwiseAlignmentModule):
    """Identity Preference Optimisation: squared regression of the log-ratio margin onto 1/(2 tau).

    Args:
        tau: Regularisation strength (the paper's tau; TRL passes it as ``beta``).
        length_normalize: Use per-token mean log-probs instead of sums. The paper writes sums;
            TRL averages per token (after consulting the authors), which keeps the target 1/(2 tau)
            on the same scale for long and short completions. The field disagrees, so both exist.
        **kwargs: See ``AlignmentModule``.
    """

    def __init__(self, tau: float = 0.1, length_normalize: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.tau = tau
        self.length_normalize = length_normalize

    def pair_loss(self, logps: PairLogps) -> tuple[DPOOutput, dict[str, torch.Tensor]]:
        pick = (lambda s: s.mean) if self.length_normalize else (lambda s: s.sum)
        return ipo_loss(*(pick(s) for s in logps), tau=self.tau), {}
