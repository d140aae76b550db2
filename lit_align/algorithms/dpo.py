"""DPO (arXiv 2305.18290) and conservative DPO (label smoothing)."""

from __future__ import annotations

from typing import Any

import torch

from lit_align.algorithms.pairwise import PairLogps, PairwiseAlignmentModule, PairwiseOutput
from lit_align.errors import check_range
from lit_align.losses import dpo_loss


class DPO(PairwiseAlignmentModule):
    """Direct Preference Optimization with the sigmoid loss (Eq. 7). Needs reference log-probs.

    Args:
        beta: KL-regularisation strength > 0; 0.1 in the paper (0.5 for summarisation).
        label_smoothing: cDPO's assumed label-flip rate eps in [0, 0.5); 0 is plain DPO.
        nll_weight: Weight alpha >= 0 of an added NLL term on the chosen completion. Guards against
            the chosen log-prob collapsing while the margin grows, a frequent complaint about DPO
            (the "RPO" remedy); 0 is the paper's loss. Normalised on purpose like the IRPO paper's
            NLL term (Pang et al. 2024, arXiv 2404.19733): each pair's -log pi(y_w|x) / |y_w|
            (completion tokens only), averaged over pairs, so it sits on the per-pair scale of the
            DPO term it is added to. (ORPO's and SFT's NLL are token-level over the batch instead:
            docs/kto_orpo.md, "NLL conventions".)
        **kwargs: See ``AlignmentModule``.
    """

    supported_references = ("copy", "precomputed", "adapter")
    unsupported_reference_reason = "the DPO loss is a log-ratio against the reference, so it needs reference log-probs"

    def __init__(self, beta: float = 0.1, label_smoothing: float = 0.0, nll_weight: float = 0.0, **kwargs: Any) -> None:
        check_range(self, "beta", beta, 0.0, low_open=True)
        check_range(self, "label_smoothing", label_smoothing, 0.0, 0.5, high_open=True)
        check_range(self, "nll_weight", nll_weight, 0.0)
        super().__init__(**kwargs)
        self.beta = beta
        self.label_smoothing = label_smoothing
        self.nll_weight = nll_weight

    def pair_loss(self, logps: PairLogps) -> tuple[PairwiseOutput, dict[str, torch.Tensor]]:
        out = PairwiseOutput(*dpo_loss(logps.policy_chosen.sum, logps.policy_rejected.sum, logps.reference_chosen.sum, logps.reference_rejected.sum, self.beta, self.label_smoothing))
        if not self.nll_weight:
            return out, {}
        nll = -logps.policy_chosen.mean
        return out._replace(losses=out.losses + self.nll_weight * nll), {"nll_loss": nll.mean().detach()}


class ConservativeDPO(DPO):
    """cDPO: DPO with label smoothing (default eps = 0.1), for preference labels that are sometimes wrong."""

    def __init__(self, label_smoothing: float = 0.1, **kwargs: Any) -> None:
        super().__init__(label_smoothing=label_smoothing, **kwargs)

    @classmethod
    def algorithm_name(cls) -> str:
        return "cdpo"
