"""GRPO: Group Relative Policy Optimization (Shao et al. 2024, DeepSeekMath, arXiv 2402.03300, Sec. 4).

For a group of G = k outputs o_1..o_G of a question q, sampled from pi_old, with outcome rewards r_i:

    A_i = (r_i - mean(r)) / std(r)                      the same for every token of o_i (Sec. 4.1.2)
    J = 1/G sum_i 1/|o_i| sum_t [ min(rho_it A_i, clip(rho_it, 1 - eps, 1 + eps) A_i) - beta k3_it ],
    rho_it = pi(o_it | q, o_i,<t) / pi_old(o_it | q, o_i,<t),
    k3_it = pi_ref/pi - log(pi_ref/pi) - 1              (Eq. 4: Schulman's k3 estimator of the KL)

The KL is a loss term, not a reward penalty (``kl_penalty: loss``). Options named after their sources:

* ``advantage_estimator: dr_grpo`` drops the std (Dr. GRPO, Liu et al. 2025, arXiv 2503.20783);
* ``loss_aggregation``: ``seq_mean`` (the 1/|o_i| above), ``token_mean`` (DAPO, arXiv 2503.14476),
  ``constant`` (Dr. GRPO: the generation budget instead of |o_i|);
* ``clip_range_high`` above ``clip_range`` is DAPO's clip-higher.
"""

from __future__ import annotations

from typing import Any

from lit_align.algorithms.policy_gradient import Aggregation, KLPenalty, PolicyGradient


class GRPO(PolicyGradient):
    """GRPO (see the module docstring). G = k is the data's ``num_samples`` (>= 2).

    Args:
        kl_coef: beta of the k3 term (the paper's 0.04).
        kl_penalty: ``loss`` (the paper's k3 term) or ``reward`` (k1 in the reward).
        advantage_estimator: ``grpo`` or ``dr_grpo`` (no std).
        policy_loss: ``token_clip``: the per-token clipped ratio.
        clip_range: epsilon (the paper's 0.2).
        loss_aggregation: ``seq_mean`` (the paper), ``token_mean`` (DAPO) or ``constant`` (Dr. GRPO).
        num_epochs: mu, passes over each group batch (the paper's 1; TRL's ``num_iterations``).
        **kwargs: See ``PolicyGradient`` and ``AlignmentModule``.
    """

    def __init__(
        self,
        kl_coef: float = 0.04,
        kl_penalty: KLPenalty = "loss",
        advantage_estimator: str = "grpo",
        policy_loss: str = "token_clip",
        clip_range: float | None = 0.2,
        loss_aggregation: Aggregation = "seq_mean",
        num_epochs: int = 1,
        **kwargs: Any,
    ) -> None:
        super().__init__(kl_coef=kl_coef, kl_penalty=kl_penalty, advantage_estimator=advantage_estimator, policy_loss=policy_loss, clip_range=clip_range, loss_aggregation=loss_aggregation, num_epochs=num_epochs, **kwargs)
