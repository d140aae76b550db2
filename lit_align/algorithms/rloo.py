"""RLOO: REINFORCE with a leave-one-out baseline (Ahmadian et al. 2024, arXiv 2402.14740).

For k >= 2 completions y_1..y_k of a prompt x, sampled from the current policy, each scored with
the KL-penalised reward (Sec. 3; Ziegler et al. 2019)

    R(x, y_i) = r(x, y_i) - beta sum_t [log pi(y_i,t) - log pi_ref(y_i,t)]         (k1, per token)

and the update is sequence-level REINFORCE with the mean of the OTHER samples as the baseline (Eq. 6):

    grad J = 1/k sum_i [R(x, y_i) - 1/(k-1) sum_{j != i} R(x, y_j)] grad log pi(y_i | x).

The whole completion is one action (no per-token credit). ``clip_range`` adds PPO's clip on the
SEQUENCE ratio pi(y)/pi_old(y) when a rollout is reused (``num_epochs`` > 1), as TRL's RLOO does.
"""

from __future__ import annotations

from typing import Any

from lit_align.algorithms.policy_gradient import Aggregation, KLPenalty, PolicyGradient


class RLOO(PolicyGradient):
    """RLOO (see the module docstring). k is the data's ``num_samples`` (>= 2).

    Args:
        kl_coef: beta of the per-token KL penalty in the reward (TRL's default 0.05).
        kl_penalty: ``reward`` (the paper's) or ``loss`` (a k3 term instead).
        advantage_estimator: ``rloo`` (the leave-one-out baseline).
        policy_loss: ``sequence_clip`` (REINFORCE on sequence log-probs; on-policy its gradient is Eq. 6).
        clip_range: null: plain REINFORCE (the paper); a number clips the sequence ratio when reusing rollouts.
        num_epochs: 1: on-policy, as the paper.
        **kwargs: See ``PolicyGradient`` (``clip_range_high``, ``loss_aggregation``, ``num_minibatches``,
            ``reward``) and ``AlignmentModule``.
    """

    def __init__(
        self,
        kl_coef: float = 0.05,
        kl_penalty: KLPenalty = "reward",
        advantage_estimator: str = "rloo",
        policy_loss: str = "sequence_clip",
        clip_range: float | None = None,
        loss_aggregation: Aggregation = "seq_mean",
        num_epochs: int = 1,
        **kwargs: Any,
    ) -> None:
        super().__init__(kl_coef=kl_coef, kl_penalty=kl_penalty, advantage_estimator=advantage_estimator, policy_loss=policy_loss, clip_range=clip_range, loss_aggregation=loss_aggregation, num_epochs=num_epochs, **kwargs)
