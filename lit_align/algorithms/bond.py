"""BOND and J-BOND (Sessa et al. 2024, arXiv 2407.14622): distil the Best-of-N distribution of a
reference (or moving anchor) policy into the policy, so one sample does what N samples + a reward did.

Both run on ``BestOfNDataModule`` (or online on ``lit_align.online.PromptDataModule``); sampling
(``lit_align.online``), the joint forward and the anchor live in ``bond_base``.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from lit_align.algorithms.bond_base import BestOfNDistillation
from lit_align.data.batches import PromptBatch
from lit_align.errors import ConfigError, check_range
from lit_align.losses.bond import bon_log_ratio, bond_loss, jbond_loss, jbond_reward, quantile_estimate

__all__ = ["BestOfNDistillation", "BOND", "JBOND"]


class BOND(BestOfNDistillation):
    """BOND with the Jeffreys divergence (Sec. 4), optionally iterated with a moving anchor (Sec. 4.3).

    The backward part needs log pi_BoN(y)/pi_ref(y) of each policy sample y, i.e. its reward quantile
    among reference samples (Theorem 1). As in the paper's experiments, the quantile is estimated
    from ``quantile_samples`` fresh Monte-Carlo samples of the anchor on the same prompts, separate
    from the N samples whose best is distilled, and the tie-aware form of Theorem 1
    (``bon_log_ratio(p_le, N, p_lt)``) is used, since discrete rewards tie often.

    Args:
        quantile_samples: m >= 1 anchor samples per prompt used only for the quantile estimate
            (16 in the paper's experiments). None reuses the N anchor samples (m = N), our earlier
            estimator: cheaper, but it biases the target toward the reference for small N
            (docs/bond.md gives the size on the embedded task).
        quantile_prior: Pseudo-count >= 0 of the quantile estimate (``quantile_estimate``): 1
            (Laplace) keeps log p_le finite when a policy sample loses to all m samples; 0 is the
            plain MC estimate (then such a sample gets log 0 = -inf, so only use 0 with large m).
        anchor_update_interval: Iterative BOND: copy the policy into the anchor every this many
            optimiser steps (>= 1), so training distils Best-of-N of the anchor again and again
            (after M rounds about Best-of-N^M of the start). None keeps the anchor fixed (plain BOND).
        **kwargs: See ``BestOfNDistillation`` (``beta`` 0.5 as in the paper).
    """

    def __init__(self, quantile_samples: int | None = 16, quantile_prior: float = 1.0, anchor_update_interval: int | None = None, **kwargs: Any) -> None:
        check_range(self, "quantile_samples", quantile_samples, 1, integer=True, allow_none=True)
        check_range(self, "quantile_prior", quantile_prior, 0.0)
        check_range(self, "anchor_update_interval", anchor_update_interval, 1, integer=True, allow_none=True)
        super().__init__(**kwargs)
        self.quantile_samples = quantile_samples
        self.quantile_prior = quantile_prior
        self.anchor_update_interval = anchor_update_interval

    @property
    def anchor_moves(self) -> bool:
        return self.anchor_update_interval is not None

    def log_bon_ratios(self, rewards: torch.Tensor, reference_rewards: torch.Tensor, n: int) -> torch.Tensor:
        """Estimated log pi_BoN(y)/pi_ref(y) [B, k] of the policy samples' ``rewards`` [B, k] from the
        m reference rewards [B, m]: Theorem 1 with p_le and p_lt counted with the same prior."""
        p_le = quantile_estimate(rewards, reference_rewards, prior=self.quantile_prior)
        p_lt = quantile_estimate(rewards, reference_rewards, strict=True, prior=self.quantile_prior)
        return bon_log_ratio(p_le, n, p_lt)

    def compute_loss(self, batch: PromptBatch, stage: str) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        batch, rollout = self.draw(batch, stage)
        rewards = rollout.rewards_by_prompt()
        reference_rewards = batch.rewards if self.quantile_samples is None else self.anchor_rewards(batch, self.quantile_samples, stage)
        policy_best, policy_samples, anchor_samples = self.sequence_logps(batch, rollout)
        out = bond_loss(policy_best, policy_samples, anchor_samples, self.log_bon_ratios(rewards, reference_rewards, batch.num_samples), self.beta)
        logs = {"forward_loss": out.forward_losses.mean(), "backward_loss": out.backward_losses.mean(), **self.sample_logs(batch, policy_samples, anchor_samples, rewards, reference_rewards)}
        return out.losses.mean(), logs

    def update_anchor(self, steps_done: int) -> None:
        if self.anchor_update_interval and steps_done % self.anchor_update_interval == 0:
            self.policy.reference.load_state_dict(self.policy.policy.state_dict())


class JBOND(BestOfNDistillation):
    """J-BOND (Sec. 5, Alg. 2): BOND made practical — 2 anchor samples per prompt (the DataModule's
    ``num_samples`` must be 2), the crude quantile reward, an EMA anchor and an explicit KL
    regulariser toward it. Update: (1 - beta) G_FW + beta G_BW + gamma G_Reg (``jbond_loss``), where
    G_BW's return keeps the log-ratio to the anchor and gamma's KL comes on top of it.

    Args:
        kl_weight: gamma >= 0, weight of the extra regulariser KL(pi || pi_anchor).
        anchor_ema: eta in (0, 1], EMA rate of the anchor after each optimiser step:
            theta_a <- (1 - eta) theta_a + eta theta.
        worst_penalty: Reward >= 0 taken off a policy sample that loses to both anchor samples
            (log 16 in the paper, derived there for 2 anchor samples).
        backward_kl: True (the paper): G_BW's return is r_J(y) - (log pi(y) - log pi_anchor(y)).
            False is our earlier variant: the return is r_J alone, so only gamma pulls toward the
            anchor (about (beta + gamma) / gamma times weaker; not the paper's algorithm).
        **kwargs: See ``BestOfNDistillation``.
    """

    def __init__(self, kl_weight: float = 0.1, anchor_ema: float = 0.02, worst_penalty: float = math.log(16), backward_kl: bool = True, **kwargs: Any) -> None:
        check_range(self, "kl_weight", kl_weight, 0.0)
        check_range(self, "anchor_ema", anchor_ema, 0.0, 1.0, low_open=True)
        check_range(self, "worst_penalty", worst_penalty, 0.0)
        super().__init__(**kwargs)
        self.kl_weight = kl_weight
        self.anchor_ema = anchor_ema
        self.worst_penalty = worst_penalty
        self.backward_kl = backward_kl

    @classmethod
    def algorithm_name(cls) -> str:
        return "jbond"

    @property
    def anchor_moves(self) -> bool:
        return True

    def connect(self, datamodule: Any) -> None:
        super().connect(datamodule)
        # Checked here, before any sampling: online N and the offline rows' N are both the data's num_samples.
        if self.sampling.num_samples != 2:
            raise ConfigError(
                f"JBOND: the data's num_samples is {self.sampling.num_samples}, but J-BOND's crude reward (-log 16 when the policy sample loses "
                "to every anchor sample, Sec. 5) is derived for exactly 2 anchor samples; set the BestOfNDataModule's num_samples to 2, "
                "or use BOND, whose quantile estimate works for any N"
            )

    def compute_loss(self, batch: PromptBatch, stage: str) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        batch, rollout = self.draw(batch, stage)
        rewards = rollout.rewards_by_prompt()
        policy_best, policy_samples, anchor_samples = self.sequence_logps(batch, rollout)
        crude = jbond_reward(rewards, batch.rewards, self.worst_penalty)
        out = jbond_loss(policy_best, policy_samples, anchor_samples, crude, self.beta, self.kl_weight, self.backward_kl)
        logs = {
            "forward_loss": out.forward_losses.mean(),
            "backward_loss": out.backward_losses.mean(),
            "regularizer_loss": out.regularizer_losses.mean(),
            **self.sample_logs(batch, policy_samples, anchor_samples, rewards),
        }
        return out.losses.mean(), logs

    @torch.no_grad()
    def update_anchor(self, steps_done: int) -> None:
        anchor = [p for p in self.policy.reference.parameters()]
        policy = [p.detach().to(a.dtype) for a, p in zip(anchor, self.policy.policy.parameters())]
        torch._foreach_lerp_(anchor, policy, self.anchor_ema)  # theta_a += eta (theta - theta_a)
