"""Direct Preference Optimization (Rafailov et al. 2023, arXiv 2305.18290) and its conservative variant."""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from lit_align.errors import check_range


class DPOOutput(NamedTuple):
    """Unreduced per-pair outputs. ``*_rewards`` are the implicit rewards beta * rho(y), detached."""

    losses: torch.Tensor
    chosen_rewards: torch.Tensor
    rejected_rewards: torch.Tensor


def dpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    reference_chosen_logps: torch.Tensor,
    reference_rejected_logps: torch.Tensor,
    beta: float = 0.1,
    label_smoothing: float = 0.0,
) -> DPOOutput:
    """DPO, Eq. 7 of arXiv 2305.18290, with optional label smoothing (conservative DPO).

    With rho(y) = log pi_theta(y|x) - log pi_ref(y|x) and h = rho(y_w) - rho(y_l):

        L = -(1 - eps) * log sigma(beta * h) - eps * log sigma(-beta * h)

    eps = 0 is plain DPO; eps in (0, 0.5) is cDPO, the DPO authors' note on noisy labels: it treats
    each label as flipped with probability eps, which keeps the optimum at a finite margin
    (beta * h* = log((1 - eps) / eps)) instead of pushing h to infinity. At init (policy equals
    reference) h = 0 and L = log 2 for every eps.
    """
    check_range("dpo_loss", "label_smoothing", label_smoothing, 0.0, 0.5, high_open=True)
    chosen_ratio = policy_chosen_logps - reference_chosen_logps
    rejected_ratio = policy_rejected_logps - reference_rejected_logps
    logits = beta * (chosen_ratio - rejected_ratio)
    # logsigmoid keeps the loss finite for large |logits|, where log(sigmoid(x)) underflows to -inf.
    losses = -(1.0 - label_smoothing) * F.logsigmoid(logits) - label_smoothing * F.logsigmoid(-logits)
    return DPOOutput(losses, beta * chosen_ratio.detach(), beta * rejected_ratio.detach())
