"""Online DPO: the DPO family trained on pairs sampled from the CURRENT policy and labelled by a reward.

Offline DPO learns from pairs drawn once from another policy; as training moves the policy away, the
pairs stop being on-policy. Online AI feedback (OAIF; Guo et al. 2024, arXiv 2402.04792, Alg. 1)
draws two responses per prompt from the current policy at every step, lets an annotator (here any
``RewardFunction``: the task's gold reward or a learned reward model) pick the better one, and takes
a DPO step on that pair. Iterative DPO (Xiong et al. 2023, arXiv 2312.11456) does the same in
rounds; ``sample_interval`` K > 1 samples from a snapshot of the policy refreshed every K steps.

``OnlinePairs`` is the sampling part alone, a mixin in front of any ``PairwiseAlignmentModule``:
``OnlineDPO(OnlinePairs, DPO)`` uses DPO's ``pair_loss`` (beta, cDPO label smoothing, RPO's NLL
term) unchanged; ``class OnlineIPO(OnlinePairs, IPO): pass`` would be online IPO.
Prompts come from ``lit_align.online.PromptDataModule`` (or ``BestOfNDataModule`` in online mode);
the sampling, scoring and seeding are the on-policy contract's (``lit_align.online``).
"""

from __future__ import annotations

import copy
from typing import Any, ClassVar, NamedTuple

import torch

from lit_align.algorithms.dpo import DPO
from lit_align.data.batches import PairwiseBatch, PromptBatch
from lit_align.data.collate import sequences_with_mask
from lit_align.errors import ConfigError, check_range
from lit_align.rewards.sanity import NoPairWatch
from lit_align.online.sampling import OnlineSampling
from lit_align.online.seeding import SeedLayout

# The seeds online DPO was recorded with (its golden trajectory): per step 7919 seeds, 2 per batch
# index (gradient accumulation draws differently per micro-batch), validation by batch only.
ONLINE_PAIRS_SEEDS = SeedLayout(step_stride=7_919, batch_stride=2, validation_offset=1, rank_stride=104_729, validation_by_batch=False)


class LabelledPairs(NamedTuple):
    """Per prompt with a usable pair: its index, and the indices of the chosen and rejected samples."""

    prompts: torch.Tensor
    chosen: torch.Tensor
    rejected: torch.Tensor

    @property
    def num_pairs(self) -> int:
        return self.prompts.numel()


def label_pairs(rewards: torch.Tensor) -> LabelledPairs:
    """From rewards [B, K] of K samples per prompt: chosen = the highest reward, rejected = the lowest.

    With K = 2 this is OAIF's labelling; with K > 2, best against worst is the rejection-sampling
    choice of iterative DPO (Xiong et al. 2023; Dong et al. 2024, arXiv 2405.07863). Prompts whose
    samples all tie carry no preference and are left out (the caller counts them). Ties for the top
    or bottom go to the lowest index, so the labelling is deterministic.
    """
    if rewards.ndim != 2 or rewards.shape[1] < 2:
        raise ValueError(f"rewards must be [prompts, samples >= 2], got shape {tuple(rewards.shape)}")
    chosen, rejected = rewards.argmax(dim=-1), rewards.argmin(dim=-1)
    keep = rewards.amax(dim=-1) > rewards.amin(dim=-1)
    prompts = keep.nonzero().flatten()
    return LabelledPairs(prompts, chosen[prompts], rejected[prompts])


class OnlinePairs(OnlineSampling):
    """Mixin for a ``PairwiseAlignmentModule``: every step, sample ``num_samples`` completions per
    prompt from the current policy, score them with ``reward``, build (chosen, rejected) pairs with
    ``label_pairs`` and run the algorithm's own pairwise loss on them.

    Args:
        num_samples: Samples per prompt (2 as in OAIF); pairs are best against worst.
        sample_interval: K: sample from a snapshot of the policy refreshed every K optimiser steps
            (1: always the current policy, fully online; K > 1 holds one more copy of the policy).
        **kwargs: ``reward`` labels the pairs (``OnlineSampling``); see the pairwise algorithm (e.g.
            ``DPO``: ``beta``, ``label_smoothing``) and ``AlignmentModule``; ``reference`` may not be
            ``precomputed`` (the pairs are new every step).
    """

    supported_references: ClassVar[tuple[str, ...]] = ("copy", "adapter")
    unsupported_reference_reason: ClassVar[str] = "the pairs are sampled anew every step, so their reference log-probs cannot be precomputed"

    seed_layout = ONLINE_PAIRS_SEEDS

    def __init__(self, num_samples: int = 2, sample_interval: int = 1, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        check_range(self, "num_samples", num_samples, 2, None, integer=True)
        check_range(self, "sample_interval", sample_interval, 1, None, integer=True)
        self.num_samples = int(num_samples)
        self.sample_interval = int(sample_interval)
        # Kept out of the module tree (plain attribute): not trained, not checkpointed; rebuilt on resume.
        object.__setattr__(self, "_snapshot", None)
        self._snapshot_step = -1
        self.no_pair_watch = NoPairWatch(type(self).__name__)

    def sampling_policy(self, stage: str):
        """The model the pairs are drawn from: the policy, or (training, K > 1) its latest snapshot."""
        if stage != "train" or self.sample_interval == 1:
            return self.policy.policy
        if self._snapshot is None or self.global_step - self._snapshot_step >= self.sample_interval:
            if self._snapshot is None:
                object.__setattr__(self, "_snapshot", copy.deepcopy(self.policy.policy).requires_grad_(False))
            else:
                self._snapshot.load_state_dict(self.policy.policy.state_dict())
            self._snapshot_step = self.global_step
        return self._snapshot

    def sample_pairs(self, batch: PromptBatch, stage: str) -> tuple[PairwiseBatch | None, dict[str, torch.Tensor]]:
        """Sample, score and label; None when every prompt of the batch tied."""
        if batch.has_completions:
            raise ConfigError(
                f"{type(self).__name__} samples its own completions from the current policy, but the data brings offline ones "
                "(completions/rewards columns); use PromptDataModule, or BestOfNDataModule with mode: online (prompts only)"
            )
        rollout = self.rollout(self.sampling_policy(stage), batch, self.num_samples, self.draw_seed(stage))
        rewards = rollout.rewards_by_prompt()
        pairs = label_pairs(rewards)
        if stage == "train":
            self.no_pair_watch.update(pairs.num_pairs, len(batch))
        logs = {"online/reward": rewards.mean(), "online/ties": torch.tensor(float(len(batch) - pairs.num_pairs)), "online/pairs": torch.tensor(float(pairs.num_pairs))}
        if pairs.num_pairs == 0:
            return None, logs
        index, k = pairs.prompts.tolist(), self.num_samples
        prompts = [batch.prompt_ids[i] for i in index]
        completions = [rollout.completion_ids[i * k + c] for i, c in zip(index, pairs.chosen.tolist())]
        completions += [rollout.completion_ids[i * k + r] for i, r in zip(index, pairs.rejected.tolist())]
        tensors = sequences_with_mask(prompts * 2, completions, self.tokenizer.pad_token_id)
        logs["online/reward_chosen"] = rewards[pairs.prompts, pairs.chosen].mean()
        logs["online/reward_rejected"] = rewards[pairs.prompts, pairs.rejected].mean()
        return PairwiseBatch(*(t.to(self.device) for t in tensors)), logs

    def compute_loss(self, batch: PromptBatch, stage: str) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        pairs, logs = self.sample_pairs(batch, stage)
        if pairs is None:
            # Nothing to learn from this batch: a zero loss with no gradient (the optimiser skips the step's update).
            return torch.zeros((), device=self.device, requires_grad=stage == "train"), logs
        loss, pair_logs = super().compute_loss(pairs, stage)
        return loss, {**pair_logs, **logs}


class OnlineDPO(OnlinePairs, DPO):
    """Online DPO (OAIF, arXiv 2402.04792): DPO's loss (Eq. 7, ``lit_align.losses.dpo_loss``) on
    pairs sampled from the current policy and labelled by ``reward``; the reference is a frozen copy
    of the start model. Args: see ``OnlinePairs`` and ``DPO``."""

    @classmethod
    def algorithm_name(cls) -> str:
        return "online_dpo"
