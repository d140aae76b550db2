"""Shared piece of pairwise methods (DPO, cDPO, IPO, ORPO, ...): one concatenated forward + metrics."""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import nn

from lit_align.algorithms.base import AlignmentModule
from lit_align.data.batches import PairwiseBatch
from lit_align.losses import DPOOutput
from lit_align.metrics import PreferenceMetrics
from lit_align.ops import SequenceLogps


class PairLogps(NamedTuple):
    """Per-pair log-probs; reference ones are None when the algorithm runs without a reference."""

    policy_chosen: SequenceLogps
    policy_rejected: SequenceLogps
    reference_chosen: SequenceLogps | None
    reference_rejected: SequenceLogps | None


def _halves(logps: SequenceLogps, n: int) -> tuple[SequenceLogps, SequenceLogps]:
    return SequenceLogps(logps.sum[:n], logps.count[:n]), SequenceLogps(logps.sum[n:], logps.count[n:])


class PairwiseAlignmentModule(AlignmentModule):
    """Subclasses implement ``pair_loss(logps) -> (DPOOutput, extra logs)``; this class runs chosen
    and rejected through one forward, reduces the loss, and keeps the implicit-reward metrics."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Keyed by stage; "train" itself cannot be a ModuleDict key (it would shadow nn.Module.train).
        self.metrics = nn.ModuleDict({"train_metrics": PreferenceMetrics(), "val_metrics": PreferenceMetrics()})

    def pair_logps(self, batch: PairwiseBatch) -> PairLogps:
        n = batch.num_pairs
        policy = _halves(self.policy.policy_logps(batch.input_ids, batch.attention_mask, batch.loss_mask), n)
        if not self.policy.has_reference:
            return PairLogps(*policy, None, None)
        reference = _halves(self.policy.reference_logps(batch.input_ids, batch.attention_mask, batch.loss_mask, batch=batch), n)
        return PairLogps(*policy, *reference)

    def pair_loss(self, logps: PairLogps) -> tuple[DPOOutput, dict[str, torch.Tensor]]:
        raise NotImplementedError

    def compute_loss(self, batch: PairwiseBatch, stage: str) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        logps = self.pair_logps(batch)
        out, logs = self.pair_loss(logps)
        tracked = self.track_metrics(stage, out.chosen_rewards, out.rejected_rewards, logps.policy_chosen.sum, logps.policy_rejected.sum)
        return out.losses.mean(), {**tracked, **logs}
