"""BOND and J-BOND (Sessa et al. 2024, arXiv 2407.14622): distil the Best-of-N distribution of a
reference (or moving anchor) policy into the policy, so one sample does what N samples + a reward did.

Both run on ``BestOfNDataModule``. Each training step draws, for B prompts, N anchor samples
(online mode; offline data bring their own) and k policy samples, scores them with ``reward``, and
runs one forward over the best anchor samples and the policy samples together.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from lit_align.algorithms.base import REFERENCE_PREFIX, AlignmentModule
from lit_align.data.batches import BestOfNBatch
from lit_align.data.best_of_n import BestOfNDataModule, score_completions
from lit_align.data.collate import sequences_with_mask
from lit_align.losses.bond import bon_log_ratio, bond_loss, jbond_loss, jbond_reward, quantile_estimate
from lit_align.rewards import LexiconSentimentReward, RewardFunction


class BestOfNDistillation(AlignmentModule):
    """Shared part of BOND and J-BOND: sampling, scoring, log-probs, and the anchor's life cycle.

    The anchor is ``policy.reference`` (mode ``copy``). When it moves (iterative BOND, J-BOND) it is
    no longer the initial model, so unlike other algorithms it is kept in checkpoints.

    Args:
        reward: Reward r(prompt, completion) that defines Best-of-N (``class_path``); default: the
            embedded task's lexicon. Offline data must have been scored with the same reward.
        num_policy_samples: k policy samples per prompt for the backward (policy-gradient) part;
            k >= 2 gives each sample a leave-one-out baseline from its own prompt.
        beta: Weight of the backward KL(pi || pi_BoN) against the forward KL(pi_BoN || pi).
        **kwargs: See ``AlignmentModule`` (``reference`` must stay ``copy``: it is the anchor).
    """

    def __init__(self, reward: RewardFunction | None = None, num_policy_samples: int = 2, beta: float = 0.5, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if self.policy.mode != "copy":
            # It samples from the anchor and (iterative BOND, J-BOND) moves it: that needs a model of its own.
            raise ValueError(f"{type(self).__name__} samples from its reference/anchor, which must be a separate model: use reference='copy', not {self.policy.mode!r}")
        if not 0.0 <= beta <= 1.0:
            raise ValueError(f"beta must be in [0, 1], got {beta}")
        self.reward = reward or LexiconSentimentReward()
        self.num_policy_samples = num_policy_samples
        self.beta = beta

    @property
    def anchor_moves(self) -> bool:
        return False

    def training_step(self, batch: BestOfNBatch, batch_idx: int) -> torch.Tensor:
        self._batch_idx = batch_idx  # seeds the draws; the base's compute_loss signature has no index
        return super().training_step(batch, batch_idx)

    def validation_step(self, batch: BestOfNBatch, batch_idx: int) -> None:
        self._batch_idx = batch_idx
        super().validation_step(batch, batch_idx)

    @property
    def data(self) -> BestOfNDataModule:
        datamodule = getattr(self.trainer, "datamodule", None)
        if not isinstance(datamodule, BestOfNDataModule):
            raise TypeError(f"{type(self).__name__} needs a BestOfNDataModule (it samples with its settings), got {type(datamodule).__name__}")
        return datamodule

    def _seed(self, stage: str, stream: int) -> int:
        # Training draws depend on the optimiser step, validation draws on the batch only, so every
        # validation sees the same anchor samples and its numbers are comparable across epochs.
        step = self.global_step if stage == "train" else getattr(self, "_batch_idx", 0)
        return (self.data.seed * 1_000_003 + 4 * step + 2 * (stage != "train") + stream + 7919 * self.global_rank) % 2**31

    def draw(self, batch: BestOfNBatch, stage: str) -> tuple[BestOfNBatch, list[list[list[int]]], torch.Tensor]:
        """Anchor completions (online mode), k policy samples per prompt and the policy samples' rewards."""
        if not batch.has_completions:
            batch = self.data.complete(batch, self.policy.reference, self.reward, self._seed(stage, 0))
        elif self.anchor_moves:
            raise ValueError(f"{type(self).__name__} moves its anchor, but offline completions are samples of the initial reference; use BestOfNDataModule(mode='online')")
        samples = self.data.sample(self.policy.policy, batch.prompt_ids, self.num_policy_samples, self._seed(stage, 1))
        rewards = score_completions(self.data.tokenizer, self.reward, batch.prompt_texts, samples).to(self.device)
        return batch, samples, rewards

    def sequence_logps(self, batch: BestOfNBatch, samples: list[list[list[int]]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """log pi(y_best) [B], log pi(y) [B, k] and log pi_anchor(y) [B, k] from ONE policy forward
        over the best anchor samples and the policy samples together."""
        b, k = len(batch), self.num_policy_samples
        prompts = batch.prompt_ids + [p for p in batch.prompt_ids for _ in range(k)]
        completions = batch.best_completions() + [c for per_prompt in samples for c in per_prompt]
        input_ids, attention_mask, loss_mask = (t.to(self.device) for t in sequences_with_mask(prompts, completions, self.data.tokenizer.pad_token_id))
        policy = self.policy.policy_logps(input_ids, attention_mask, loss_mask).sum
        # The anchor needs only the policy samples (the backward part's log-ratio).
        anchor = self.policy.reference_logps(input_ids[b:], attention_mask[b:], loss_mask[b:]).sum
        return policy[:b], policy[b:].view(b, k), anchor.view(b, k)

    def sample_logs(self, batch: BestOfNBatch, policy_logps: torch.Tensor, anchor_logps: torch.Tensor, rewards: torch.Tensor) -> dict[str, torch.Tensor]:
        return {
            "reward": rewards.mean(),
            "anchor_reward": batch.rewards.mean(),
            "bon_reward": batch.rewards.max(dim=-1).values.mean(),
            # Plain MC quantile (no prior): the share of anchor samples the policy sample matches or beats.
            "quantile": quantile_estimate(rewards, batch.rewards).mean(),
            "kl": (policy_logps - anchor_logps).detach().mean(),
        }

    # ----- the anchor ----------------------------------------------------------------------------
    def update_anchor(self, steps_done: int) -> None:
        """Called after every optimiser step; subclasses with a moving anchor override it."""

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        super().optimizer_step(*args, **kwargs)
        # Lightning counts the step as completed only after this hook returns.
        self.update_anchor(self.trainer.global_step + 1)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # A moving anchor is training state: rebuilding it from `model` on resume (what the base class
        # does for a frozen reference) would silently restart iterative BOND / J-BOND from round 0.
        if not self.anchor_moves:
            super().on_save_checkpoint(checkpoint)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if not any(k.startswith(REFERENCE_PREFIX) for k in checkpoint["state_dict"]):
            super().on_load_checkpoint(checkpoint)


class BOND(BestOfNDistillation):
    """BOND with the Jeffreys divergence (Sec. 4), optionally iterated with a moving anchor (Sec. 4.3).

    Args:
        quantile_prior: Pseudo-count of the quantile estimate (``quantile_estimate``): 1 (Laplace)
            keeps log p_le finite when a policy sample loses to all N anchor samples; 0 is the plain
            MC estimate (then such a sample gets log 0 = -inf, so only use 0 with large N).
        anchor_update_interval: Iterative BOND: copy the policy into the anchor every this many
            optimiser steps, so training distils Best-of-N of the anchor again and again (after M
            rounds about Best-of-N^M of the start). None keeps the anchor fixed (plain BOND).
        **kwargs: See ``BestOfNDistillation`` (``beta`` 0.5 as in the paper).
    """

    def __init__(self, quantile_prior: float = 1.0, anchor_update_interval: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if anchor_update_interval is not None and anchor_update_interval < 1:
            raise ValueError(f"anchor_update_interval must be a positive number of steps or None, got {anchor_update_interval}")
        self.quantile_prior = quantile_prior
        self.anchor_update_interval = anchor_update_interval

    @property
    def anchor_moves(self) -> bool:
        return self.anchor_update_interval is not None

    def compute_loss(self, batch: BestOfNBatch, stage: str) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        batch, samples, rewards = self.draw(batch, stage)
        policy_best, policy_samples, anchor_samples = self.sequence_logps(batch, samples)
        p_le = quantile_estimate(rewards, batch.rewards, prior=self.quantile_prior)
        out = bond_loss(policy_best, policy_samples, anchor_samples, bon_log_ratio(p_le, batch.num_samples), self.beta)
        logs = {"forward_loss": out.forward_losses.mean(), "backward_loss": out.backward_losses.mean(), **self.sample_logs(batch, policy_samples, anchor_samples, rewards)}
        return out.losses.mean(), logs

    def update_anchor(self, steps_done: int) -> None:
        if self.anchor_update_interval and steps_done % self.anchor_update_interval == 0:
            self.policy.reference.load_state_dict(self.policy.policy.state_dict())


class JBOND(BestOfNDistillation):
    """J-BOND (Sec. 5, Alg. 2): BOND made practical — few anchor samples (set the DataModule's
    ``num_samples`` to 2 as in the paper), the crude quantile reward, an EMA anchor and an explicit
    KL regulariser toward it. Update: (1 - beta) G_forward + beta G_backward + gamma G_regulariser.

    Args:
        kl_weight: gamma, weight of KL(pi || pi_anchor).
        anchor_ema: eta, EMA rate of the anchor after each optimiser step: theta_a <- (1 - eta) theta_a + eta theta.
        worst_penalty: Reward of a policy sample that loses to every anchor sample (log 16 in the paper).
        **kwargs: See ``BestOfNDistillation``.
    """

    def __init__(self, kl_weight: float = 0.1, anchor_ema: float = 0.02, worst_penalty: float = math.log(16), **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not 0.0 < anchor_ema <= 1.0:
            raise ValueError(f"anchor_ema (eta) must be in (0, 1], got {anchor_ema}")
        self.kl_weight = kl_weight
        self.anchor_ema = anchor_ema
        self.worst_penalty = worst_penalty

    @classmethod
    def algorithm_name(cls) -> str:
        return "jbond"

    @property
    def anchor_moves(self) -> bool:
        return True

    def compute_loss(self, batch: BestOfNBatch, stage: str) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        batch, samples, rewards = self.draw(batch, stage)
        policy_best, policy_samples, anchor_samples = self.sequence_logps(batch, samples)
        crude = jbond_reward(rewards, batch.rewards, self.worst_penalty)
        out = jbond_loss(policy_best, policy_samples, anchor_samples, crude, self.beta, self.kl_weight)
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
