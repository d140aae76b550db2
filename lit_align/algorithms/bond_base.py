"""Shared part of BOND and J-BOND (Sessa et al. 2024, arXiv 2407.14622): sampling, scoring,
log-probs, and the anchor's life cycle. The objectives live in ``algorithms/bond.py``."""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from lit_align.algorithms.base import AlignmentModule
from lit_align.algorithms.online_sampling import OnlineSampling
from lit_align.data.batches import BestOfNBatch
from lit_align.data.collate import sequences_with_mask
from lit_align.errors import ConfigError, check_range
from lit_align.losses.bond import quantile_estimate
from lit_align.rewards import LexiconSentimentReward, RewardFunction

# Seed streams of one step: every draw of a step gets its own seed, so no two draws share a stream.
ANCHOR_STREAM, POLICY_STREAM, QUANTILE_STREAM = 0, 1, 2


class BestOfNDistillation(OnlineSampling, AlignmentModule):
    """Shared part of BOND and J-BOND.

    Each training step draws, for B prompts, N anchor samples (online mode; offline data bring
    their own) and k policy samples, scores them with ``reward``, and runs one forward over the
    best anchor samples and the policy samples together. N, the generation budget and the
    temperature are the ``BestOfNDataModule``'s, received once in ``connect`` (``OnlineSampling``).

    The anchor is ``policy.reference`` (mode ``copy``). When it moves (iterative BOND, J-BOND) it is
    no longer the initial model, so unlike other algorithms it is kept in checkpoints.

    Args:
        reward: Reward r(prompt, completion) that defines Best-of-N (``class_path``); default: the
            embedded task's lexicon. Offline data must have been scored with the same reward.
        num_policy_samples: k >= 1 policy samples per prompt for the backward (policy-gradient)
            part; k >= 2 gives each sample a leave-one-out baseline from its own prompt.
        beta: Weight in [0, 1] of the backward KL(pi || pi_BoN) against the forward KL(pi_BoN || pi).
        **kwargs: See ``AlignmentModule`` (``reference`` must stay ``copy``: it is the anchor).
    """

    supported_references: ClassVar[tuple[str, ...]] = ("copy",)
    # It samples from the anchor and (iterative BOND, J-BOND) moves it: that needs a model of its own.
    unsupported_reference_reason: ClassVar[str] = "it samples from its reference (the anchor) and may move it, so the anchor must be a separate model"

    def __init__(self, reward: RewardFunction | None = None, num_policy_samples: int = 2, beta: float = 0.5, **kwargs: Any) -> None:
        check_range(self, "beta", beta, 0.0, 1.0)
        check_range(self, "num_policy_samples", num_policy_samples, 1, integer=True)
        super().__init__(**kwargs)
        self.reward = reward or LexiconSentimentReward()
        self.num_policy_samples = int(num_policy_samples)
        self.beta = beta

    @property
    def anchor_moves(self) -> bool:
        return False

    @property
    def reference_in_checkpoint(self) -> bool:
        # A moving anchor is training state: rebuilding it from `model` on resume (what the base class
        # does for a frozen reference) would silently restart iterative BOND / J-BOND from round 0.
        return self.anchor_moves

    def _seed(self, stage: str, stream: int) -> int:
        # Training draws depend on the optimiser step, validation draws on the batch only, so every
        # validation sees the same anchor samples and its numbers are comparable across epochs.
        # 4 streams per (step, stage): anchor, policy, quantile reference samples, spare.
        step = self.global_step if stage == "train" else self.batch_index
        return (self.settings.seed * 1_000_003 + 8 * step + 4 * (stage != "train") + stream + 7919 * self.global_rank) % 2**31

    def draw(self, batch: BestOfNBatch, stage: str) -> tuple[BestOfNBatch, list[list[list[int]]], torch.Tensor]:
        """Anchor completions (online mode: N = the data's ``num_samples``), k policy samples per prompt
        and the policy samples' rewards."""
        if not batch.has_completions:
            with self.policy.reference_model() as anchor:
                samples, rewards = self.sample_and_score(anchor, batch, self.settings.num_samples, self._seed(stage, ANCHOR_STREAM))
            batch = BestOfNBatch(batch.prompt_ids, batch.prompt_texts, samples, rewards)
        elif self.anchor_moves:
            raise ConfigError(f"{type(self).__name__} moves its anchor, but offline completions are samples of the initial reference; use BestOfNDataModule(mode='online')")
        samples, rewards = self.sample_and_score(self.policy.policy, batch, self.num_policy_samples, self._seed(stage, POLICY_STREAM))
        return batch, samples, rewards

    def anchor_rewards(self, batch: BestOfNBatch, num_samples: int, stage: str) -> torch.Tensor:
        """Rewards [B, m] of m fresh anchor samples on the batch's prompts (own seed stream), e.g. the
        Monte-Carlo reference samples of the quantile estimate."""
        with self.policy.reference_model() as anchor:
            return self.sample_and_score(anchor, batch, num_samples, self._seed(stage, QUANTILE_STREAM))[1]

    def sequence_logps(self, batch: BestOfNBatch, samples: list[list[list[int]]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """log pi(y_best) [B], log pi(y) [B, k] and log pi_anchor(y) [B, k] from ONE policy forward
        over the best anchor samples and the policy samples together."""
        b, k = len(batch), self.num_policy_samples
        prompts = batch.prompt_ids + [p for p in batch.prompt_ids for _ in range(k)]
        completions = batch.best_completions() + [c for per_prompt in samples for c in per_prompt]
        input_ids, attention_mask, loss_mask = (t.to(self.device) for t in sequences_with_mask(prompts, completions, self.tokenizer.pad_token_id))
        policy = self.policy.policy_logps(input_ids, attention_mask, loss_mask).sum
        # The anchor needs only the policy samples (the backward part's log-ratio).
        anchor = self.policy.reference_logps(input_ids[b:], attention_mask[b:], loss_mask[b:]).sum
        return policy[:b], policy[b:].view(b, k), anchor.view(b, k)

    def sample_logs(self, batch: BestOfNBatch, policy_logps: torch.Tensor, anchor_logps: torch.Tensor, rewards: torch.Tensor, reference_rewards: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        reference_rewards = batch.rewards if reference_rewards is None else reference_rewards
        return {
            "reward": rewards.mean(),
            "anchor_reward": batch.rewards.mean(),
            "bon_reward": batch.rewards.amax(dim=-1).mean(),
            # Plain MC quantile (no prior): the share of anchor samples the policy sample matches or beats.
            "quantile": quantile_estimate(rewards, reference_rewards).mean(),
            "kl": (policy_logps - anchor_logps).detach().mean(),
        }

    # ----- the anchor ----------------------------------------------------------------------------
    def update_anchor(self, steps_done: int) -> None:
        """Called after every optimiser step; subclasses with a moving anchor override it."""

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        super().optimizer_step(*args, **kwargs)
        # Lightning counts the step as completed only after this hook returns.
        self.update_anchor(self.trainer.global_step + 1)

