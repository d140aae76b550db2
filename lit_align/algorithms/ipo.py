"""IPO (arXiv 2310.12036)."""

from __future__ import annotations

from typing import Any

import torch

from lit_align.algorithms.pairwise import PairLogps, PairwiseAlignmentModule, PairwiseOutput
from lit_align.errors import check_range
from lit_align.losses import ipo_loss


class IPO(PairwiseAlignmentModule):
    """Identity Preference Optimisation: squared regression of the log-ratio margin onto 1/(2 tau).

    Args:
        tau: Regularisation strength > 0 (the paper's tau; TRL passes it as ``beta``).
        length_normalize: Use per-token mean log-probs instead of sums in the loss. The paper writes
            sums; TRL averages per token (after consulting the authors), which keeps the target
            1/(2 tau) on the same scale for long and short completions. The field disagrees, so
            both exist. Either way the logged ``rewards/*`` are tau * the SUMMED log-ratio, the DPO
            implicit reward, so every pairwise method's rewards read on one scale.
        **kwargs: See ``AlignmentModule``.
    """

    supported_references = ("copy", "precomputed", "adapter")
    unsupported_reference_reason = "the IPO loss regresses the log-ratio against the reference, so it needs reference log-probs"

    def __init__(self, tau: float = 0.1, length_normalize: bool = False, **kwargs: Any) -> None:
        check_range(self, "tau", tau, 0.0, low_open=True)
        super().__init__(**kwargs)
        self.tau = tau
        self.length_normalize = length_normalize

    def pair_loss(self, logps: PairLogps) -> tuple[PairwiseOutput, dict[str, torch.Tensor]]:
        pick = (lambda s: s.mean) if self.length_normalize else (lambda s: s.sum)
        out = PairwiseOutput(*ipo_loss(*(pick(s) for s in logps), tau=self.tau))
        if self.length_normalize:
            # The loss used per-token means; the logged implicit reward stays tau * summed log-ratio.
            chosen, rejected, ref_chosen, ref_rejected = logps
            out = out._replace(chosen_rewards=self.tau * (chosen.sum - ref_chosen.sum).detach(), rejected_rewards=self.tau * (rejected.sum - ref_rejected.sum).detach())
        return out, {}
