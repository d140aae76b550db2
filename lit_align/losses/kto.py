"""Kahneman-Tversky Optimization (Ethayarajh et al. 2024, arXiv 2402.01306)."""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.distributed as dist

# Eq. 8 of the paper: keep lambda_D * n_D / (lambda_U * n_U) in [1, 4/3].
RECOMMENDED_WEIGHT_RATIO = (1.0, 4.0 / 3.0)


class KTOOutput(NamedTuple):
    """Unreduced per-example losses, implicit rewards beta * rho(y) (detached), and the z0 used."""

    losses: torch.Tensor
    rewards: torch.Tensor
    kl: torch.Tensor


def kto_reference_point(policy_kl_logps: torch.Tensor, reference_kl_logps: torch.Tensor) -> torch.Tensor:
    """z0 = max(0, mean over mismatched pairs (x_i, y_j), j != i, of log pi_theta(y_j|x_i) - log pi_ref(y_j|x_i)).

    The paper's biased but practical estimate of KL(pi_theta || pi_ref): detached —
    z0 only moves the reference point, no gradient flows through it — and clamped at 0, since a
    KL divergence cannot be negative. Under DDP the sum and count of the log-ratios are
    all-reduced, so every rank uses the same z0, the mean over all ranks' mismatched pairs (the
    clamp comes after the average, as in the authors' code). A micro-batch without any pair
    (size 1) contributes nothing; if no rank has a pair, z0 = 0.
    """
    log_ratios = (policy_kl_logps - reference_kl_logps).detach().to(torch.float64)
    totals = torch.stack([log_ratios.sum(), torch.tensor(float(log_ratios.numel()), dtype=torch.float64, device=log_ratios.device)])
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(totals, op=dist.ReduceOp.SUM)
    z0 = totals[0] / totals[1] if totals[1] > 0 else totals[0].new_zeros(())
    return z0.clamp(min=0).to(policy_kl_logps.dtype)


def kto_loss(
    policy_logps: torch.Tensor,
    reference_logps: torch.Tensor,
    desirable: torch.Tensor,
    policy_kl_logps: torch.Tensor,
    reference_kl_logps: torch.Tensor,
    beta: float = 0.1,
    desirable_weight: float = 1.0,
    undesirable_weight: float = 1.0,
) -> KTOOutput:
    """KTO, the loss of arXiv 2402.01306 (Sec. 4): L = E[lambda_y - v(x, y)] with rho = log pi_theta(y|x) - log pi_ref(y|x) and

        v(x, y) = lambda_D * sigma(beta * (rho - z0))   if y is desirable,
                  lambda_U * sigma(beta * (z0 - rho))   if y is undesirable,

    so the per-example loss is lambda_D * (1 - sigma(beta (rho - z0))) or lambda_U * (1 - sigma(beta (z0 - rho))).
    z0 comes from ``kto_reference_point`` on the mismatched pairs. When policy == reference,
    rho = 0 and z0 = 0, so every loss is lambda_y / 2. ``desirable`` is a bool tensor; a batch may
    hold only one kind.
    """
    z0 = kto_reference_point(policy_kl_logps, reference_kl_logps)
    rho = policy_logps - reference_logps
    desirable = desirable.to(torch.bool)
    # The value of a desirable output grows with rho above z0, an undesirable one's with rho below it.
    value = torch.where(desirable, torch.sigmoid(beta * (rho - z0)), torch.sigmoid(beta * (z0 - rho)))
    weight = torch.where(desirable, torch.full_like(rho, desirable_weight), torch.full_like(rho, undesirable_weight))
    return KTOOutput(weight * (1.0 - value), beta * rho.detach(), z0)


def check_weight_ratio(num_desirable: int, num_undesirable: int, desirable_weight: float = 1.0, undesirable_weight: float = 1.0) -> str | None:
    """A warning message when lambda_D n_D / (lambda_U n_U) leaves the paper's range [1, 4/3] (Eq. 8), else None.

    The ratio balances how much of the loss each kind of feedback contributes; the paper finds
    results degrade outside the range, and suggests re-weighting rather than re-sampling.
    """
    if num_desirable == 0 or num_undesirable == 0:
        kind = "desirable" if num_desirable == 0 else "undesirable"
        return f"KTO: the training data has no {kind} examples; the loss then only pushes one way"
    if desirable_weight == 0 or undesirable_weight == 0:
        name, kind = ("desirable_weight", "desirable") if desirable_weight == 0 else ("undesirable_weight", "undesirable")
        return f"KTO: {name} = 0, so {kind} examples do not contribute to the loss, which then only pushes one way (the paper keeps both weights > 0, Eq. 8)"
    ratio = desirable_weight * num_desirable / (undesirable_weight * num_undesirable)
    low, high = RECOMMENDED_WEIGHT_RATIO
    if low <= ratio <= high:
        return None
    # Solve lambda_D n_D / (lambda_U n_U) in [1, 4/3] for lambda_D at the given lambda_U.
    lo, hi = (bound * undesirable_weight * num_undesirable / num_desirable for bound in (low, high))
    return (
        f"KTO: desirable_weight * n_desirable / (undesirable_weight * n_undesirable) = "
        f"{desirable_weight} * {num_desirable} / ({undesirable_weight} * {num_undesirable}) = {ratio:.3g}, "
        f"outside the range [1, 4/3] the paper recommends (Eq. 8); with undesirable_weight={undesirable_weight} "
        f"set desirable_weight in [{lo:.3g}, {hi:.3g}]"
    )
