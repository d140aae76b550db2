"""SLiC-HF's calibration loss as a plug-in algorithm (Zhao et al. 2023, arXiv 2305.10425, Eq. 1).

    python -m lit_align fit --config examples/slic.yaml

(run from the repository root, so ``examples`` is importable; elsewhere put this file on PYTHONPATH).
Everything below uses only what ``lit_align.algorithms`` exports; the base brings the data, the
chosen/rejected forward, ``rewards/*`` and ``logps/*`` metrics, optimiser, logging and export.
"""

from __future__ import annotations

from typing import Any

import torch

from lit_align.algorithms import PairLogps, PairwiseAlignmentModule, PairwiseOutput
from lit_align.errors import check_range


class SLiC(PairwiseAlignmentModule):
    """Sequence likelihood calibration, reference-free (SLiC-HF, Eq. 1):
    L = max(0, delta - log pi(y_w|x) + log pi(y_l|x)) - lambda * log pi(y_ref|x).

    The hinge asks the chosen completion's log-likelihood to exceed the rejected one's by delta;
    the second term is the paper's regulariser, with the chosen completion as its target y_ref
    (preference pairs carry no separate SFT target). ``rewards/*`` logs the log-likelihoods.

    Args:
        delta: Margin of the hinge, > 0.
        reg_weight: lambda >= 0, weight of the regulariser (0: the calibration loss alone).
        **kwargs: See ``AlignmentModule`` (reference: none only).
    """

    default_reference = "none"
    supported_references = ("none",)
    unsupported_reference_reason = "this SLiC loss reads the policy's log-likelihoods only"

    def __init__(self, delta: float = 1.0, reg_weight: float = 0.1, **kwargs: Any) -> None:
        check_range(self, "delta", delta, 0.0, low_open=True)
        check_range(self, "reg_weight", reg_weight, 0.0)
        super().__init__(**kwargs)
        self.delta, self.reg_weight = delta, reg_weight

    def pair_loss(self, logps: PairLogps) -> tuple[PairwiseOutput, dict[str, torch.Tensor]]:
        chosen, rejected = logps.policy_chosen.sum, logps.policy_rejected.sum
        calibration = torch.relu(self.delta - chosen + rejected)
        losses = calibration - self.reg_weight * chosen
        return PairwiseOutput(losses, chosen.detach(), rejected.detach()), {"calibration_loss": calibration.mean().detach()}
