"""Shared part of BOND and J-BOND (Sessa et al. 2024, arXiv 2407.14622): sampling, scoring,
log-probs, and the anchor's life cycle. The objectives live in ``algorithms/bond.py``."""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from lit_align.algorithms.base import AlignmentModule
from lit_align.data.batches import BestOfNBatch, PromptBatch
from lit_align.data.collate import sequences_with_mask
from lit_align.errors import ConfigError, check_range
from lit_align.losses.bond import quantile_estimate
from lit_align.losses.kl import kl_k1
from lit_align.online.rollout import Rollout
from lit_align.online.sampling import OnlineSampling

# Seed streams of one step (``OnlineSampling.draw_seed``; 4 per step and stage in the default layout):
# every draw of a step gets its own seed, so no two draws share a stream.
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
        num_policy_samples: k >= 1 policy samples per prompt for the backward (policy-gradient)
            part; k >= 2 gives each sample a leave-one-out baseline from its own prompt.
        beta: Weight in [0, 1] of the backward KL(pi || pi_BoN) against the forward KL(pi_BoN || pi).
        **kwargs: ``reward`` defines Best-of-N (``OnlineSampling``; offline data must have been scored
            with the same reward); see ``AlignmentModule`` (``reference`` must stay ``copy``: it is the anchor).
    """

    supported_references: ClassVar[tuple[str, ...]] = ("copy",)
    # It samples from the anchor and (iterative BOND, J-BOND) moves it: that needs a model of its own.
    unsupported_reference_reason: ClassVar[str] = "it samples from its reference (the anchor) and may move it, so the anchor must be a separate model"

    def __init__(self, num_policy_samples: int = 2, beta: float = 0.5, **kwargs: Any) -> None:
        check_range(self, "beta", beta, 0.0, 1.0)
        check_range(self, "num_policy_samples", num_policy_samples, 1, integer=True)
        super().__init__(**kwargs)
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

    def draw(self, batch: PromptBatch, stage: str) -> tuple[BestOfNBatch, Rollout]:
        """The batch with its anchor completions (online: N = the data's ``num_samples`` fresh anchor
        samples) and the rollout of k policy samples per prompt, scored.

        Training draws depend on the optimiser step, validation draws on the batch only, so every
        validation sees the same anchor samples and its numbers are comparable across epochs."""
        if not batch.has_completions:
            with self.policy.reference_model() as anchor:
                anchor_rollout = self.rollout(anchor, batch, self.settings.num_samples, self.draw_seed(stage, ANCHOR_STREAM))
            batch = BestOfNBatch(batch.prompt_ids, batch.prompt_texts, anchor_rollout.completions_by_prompt(), anchor_rollout.rewards_by_prompt())
        elif self.anchor_moves:
            raise ConfigError(f"{type(self).__name__} moves its anchor, but offline completions are samples of the initial reference; use BestOfNDataModule(mode='online')")
        return batch, self.rollout(self.policy.policy, batch, self.num_policy_samples, self.draw_seed(stage, POLICY_STREAM))

    def anchor_rewards(self, batch: PromptBatch, num_samples: int, stage: str) -> torch.Tensor:
        """Rewards [B, m] of m fresh anchor samples on the batch's prompts (own seed stream), e.g. the
        Monte-Carlo reference samples of the quantile estimate."""
        with self.policy.reference_model() as anchor:
            return self.rollout(anchor, batch, num_samples, self.draw_seed(stage, QUANTILE_STREAM)).rewards_by_prompt()

    def sequence_logps(self, batch: BestOfNBatch, rollout: Rollout) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """log pi(y_best) [B], log pi(y) [B, k] and log pi_anchor(y) [B, k] from ONE policy forward
        over the best anchor samples and the rollout's policy samples together."""
        b, k = len(batch), rollout.num_samples
        prompts = batch.prompt_ids + rollout.prompt_ids
        completions = batch.best_completions() + rollout.completion_ids
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
            "kl": kl_k1(policy_logps, anchor_logps).detach().mean(),
        }

    # ----- the anchor ----------------------------------------------------------------------------
    def update_anchor(self, steps_done: int) -> None:
        """Called after every optimiser step; subclasses with a moving anchor override it."""

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        super().optimizer_step(*args, **kwargs)
        # Lightning counts the step as completed only after this hook returns.
        self.update_anchor(self.trainer.global_step + 1)

