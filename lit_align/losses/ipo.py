"""Identity Preference Optimisation (Azar et al. 2023, arXiv 2310.12036)."""

from __future__ import annotations

import torch

from lit_align.losses.dpo import DPOOutput


def ipo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    reference_chosen_logps: torch.Tensor,
    reference_rejected_logps: torch.Tensor,
    tau: float = 0.1,
) -> DPOOutput:
    """IPO, Eq. 17 of arXiv 2310.12036: L = (h - 1 / (2 tau))^2, h = rho(y_w) - rho(y_l).

    The squared loss regresses the log-ratio margin onto the finite target 1/(2 tau) instead of
    pushing it to infinity as DPO does with deterministic preferences; the minimum is at
    h = 1/(2 tau). Whether the log-probs are sums or per-token means is the caller's choice
    (``IPO(length_normalize=...)``): the paper writes sums, TRL averages per token.
    Implicit rewards are reported as tau * rho(y) of the log-probs passed in, on DPO's scale when
    those are sums (``IPO(length_normalize=True)`` logs tau * the summed rho whatever the loss used).
    """
    chosen_ratio = policy_chosen_logps - reference_chosen_logps
    rejected_ratio = policy_rejected_logps - reference_rejected_logps
    losses = (chosen_ratio - rejected_ratio - 1.0 / (2.0 * tau)) ** 2
    return DPOOutput(losses, tau * chosen_ratio.detach(), tau * rejected_ratio.detach())
