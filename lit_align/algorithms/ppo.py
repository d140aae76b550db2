"""PPO for language models (Ziegler et al. 2019, arXiv 1909.08593; Ouyang et al. 2022, arXiv
2203.02155), with the conventions of Huang et al. 2024, "The N Implementation Details of RLHF with
PPO" (arXiv 2403.17031); where we differ, docs/rl.md says so.

Per token t of a completion sampled from pi_old, with a critic V:

    r_t = -beta (log pi_old(y_t) - log pi_ref(y_t)) + [t = last] r(x, y)        (k1 penalty, Ziegler Eq. 2)
    delta_t = r_t + gamma V(s_{t+1}) - V(s_t),  A_t = sum_l (gamma lambda)^l delta_{t+l},  R_t = A_t + V(s_t)   (GAE)
    A <- whiten(A) over the batch's completion tokens
    L = token_mean[ -min(rho_t A_t, clip(rho_t, 1 -+ eps) A_t) ]
        + c_v token_mean[ 1/2 max((V - R)^2, (V_old + clip(V - V_old, -eps_v, eps_v) - R)^2) ],
    rho_t = pi(y_t) / pi_old(y_t),  for ``num_epochs`` passes over each rollout batch in minibatches.

The critic is a SEPARATE model: a one-output sequence classifier applied at every position
(``lit_align.reward_head``), initialised from ``value_model``: a reward model exported by
configs/reward_model.yaml (Huang et al.'s choice: its head already scores), or by default the
policy's own weights with a zero head.
"""

from __future__ import annotations

from typing import Any, Iterator

import torch

from lit_align.algorithms.policy_gradient import Aggregation, Experience, KLPenalty, PolicyGradient
from lit_align.errors import check_range
from lit_align.losses.policy_gradient import clipped_value_loss, masked_mean, whiten
from lit_align.online.rollout import Rollout
from lit_align.reward_head import build_sequence_classifier, score_layer


class PPO(PolicyGradient):
    """PPO with a critic, GAE and a per-token KL penalty (see the module docstring). Any k >= 1.

    Args:
        value_model: Where the critic starts: a reward model folder (``save_pretrained`` of a one-output
            classifier, e.g. configs/reward_model.yaml's export), or null for the policy's ``model``.
        vf_coef: c_v, weight of the value loss (TRL's 0.1).
        value_clip_range: eps_v of the clipped value loss; null: unclipped.
        gamma: GAE discount (1: the reward is not discounted within a completion).
        lam: GAE lambda (0.95).
        whiten_advantages: Whiten advantages over each rollout batch's completion tokens.
        kl_coef, kl_penalty, advantage_estimator, policy_loss, clip_range, loss_aggregation,
        num_epochs: See ``PolicyGradient``; defaults as TRL's PPO (beta 0.05 in the reward, GAE,
            token-level clip 0.2, token mean, 4 epochs).
        **kwargs: See ``PolicyGradient`` and ``AlignmentModule``.
    """

    min_samples = 1

    def __init__(
        self,
        value_model: str | None = None,
        vf_coef: float = 0.1,
        value_clip_range: float | None = 0.2,
        gamma: float = 1.0,
        lam: float = 0.95,
        whiten_advantages: bool = True,
        kl_coef: float = 0.05,
        kl_penalty: KLPenalty = "reward",
        advantage_estimator: str = "gae",
        policy_loss: str = "token_clip",
        clip_range: float | None = 0.2,
        loss_aggregation: Aggregation = "token_mean",
        num_epochs: int = 4,
        **kwargs: Any,
    ) -> None:
        check_range(self, "vf_coef", vf_coef, 0.0)
        check_range(self, "value_clip_range", value_clip_range, 0.0, low_open=True, allow_none=True)
        check_range(self, "gamma", gamma, 0.0, 1.0)
        check_range(self, "lam", lam, 0.0, 1.0)
        super().__init__(kl_coef=kl_coef, kl_penalty=kl_penalty, advantage_estimator=advantage_estimator, policy_loss=policy_loss, clip_range=clip_range, loss_aggregation=loss_aggregation, num_epochs=num_epochs, **kwargs)
        self.vf_coef, self.value_clip_range, self.gamma, self.lam, self.whiten_advantages = vf_coef, value_clip_range, gamma, lam, whiten_advantages
        trust = self.hparams.get("trust_remote_code", False)
        self.critic = build_sequence_classifier(value_model or self.model_name, self.tokenizer, self.hparams.get("dtype"), trust)
        self.critic.train()

    def trainable_parameters(self) -> Iterator[torch.nn.Parameter]:
        yield from super().trainable_parameters()
        yield from (p for p in self.critic.parameters() if p.requires_grad)

    def values(self, rollout: Rollout) -> torch.Tensor:
        """V(s_t) [R, T-1] at the positions whose next token is a completion token (0 elsewhere)."""
        hidden = self.critic.base_model(input_ids=rollout.input_ids, attention_mask=rollout.attention_mask, use_cache=False).last_hidden_state
        return score_layer(self.critic)(hidden[:, :-1]).squeeze(-1).float() * rollout.completion_mask

    @torch.no_grad()
    def rollout_values(self, rollout: Rollout) -> torch.Tensor:
        was_training = self.critic.training
        self.critic.eval()  # as the policy's sampling-time log-probs: no dropout
        try:
            return self.values(rollout)
        finally:
            self.critic.train(was_training)

    def normalize_advantages(self, advantages: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return whiten(advantages, mask) if self.whiten_advantages else advantages

    def auxiliary_loss(self, experience: Experience) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        mask = experience.rollout.completion_mask
        losses, clipped = clipped_value_loss(self.values(experience.rollout), experience.old_values, experience.returns, self.value_clip_range)
        value_loss = masked_mean(losses, mask)
        return self.vf_coef * value_loss, {"value_loss": value_loss.detach(), "value_clip_fraction": masked_mean(clipped.float(), mask)}
