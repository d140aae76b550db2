"""A new algorithm outside the package, trained purely by ``class_path``: SimPO (arXiv 2405.14734).

    python -m lit_align fit --config examples/simpo.yaml --data configs/data/embedded/pairs.yaml

(run from the repository root, so ``examples`` is importable; elsewhere put this file on PYTHONPATH).
The whole algorithm is the loss below plus ``pair_loss``: the shared base brings the data, the
concatenated chosen/rejected forward, metrics, optimiser, logging, checkpoints and export.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from lit_align.algorithms import PairLogps, PairwiseAlignmentModule, PairwiseOutput


def simpo_loss(chosen_mean_logps: torch.Tensor, rejected_mean_logps: torch.Tensor, beta: float, gamma: float) -> PairwiseOutput:
    """SimPO, Eq. 6: L = -log sigma(beta/|y_w| log pi(y_w|x) - beta/|y_l| log pi(y_l|x) - gamma).

    Reference-free: the implicit reward is the length-normalised log-likelihood scaled by beta,
    and gamma is a target reward margin.
    """
    chosen, rejected = beta * chosen_mean_logps, beta * rejected_mean_logps
    return PairwiseOutput(-F.logsigmoid(chosen - rejected - gamma), chosen.detach(), rejected.detach())


class SimPO(PairwiseAlignmentModule):
    """Simple Preference Optimization. Holds no reference model.

    Args:
        beta: Reward scale (paper: 2.0-2.5).
        gamma: Target reward margin (paper: gamma/beta in 0.1-0.8).
        **kwargs: See ``AlignmentModule``.
    """

    default_reference = "none"
    supported_references = ("none",)

    def __init__(self, beta: float = 2.0, gamma: float = 1.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.beta = beta
        self.gamma = gamma

    def pair_loss(self, logps: PairLogps) -> tuple[PairwiseOutput, dict[str, torch.Tensor]]:
        return simpo_loss(logps.policy_chosen.mean, logps.policy_rejected.mean, self.beta, self.gamma), {}
