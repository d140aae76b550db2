"""Shared piece of pairwise methods (DPO, cDPO, IPO, ORPO, ...): one concatenated forward + metrics."""

from __future__ import annotations

from typing import Any, NamedTuple

import torch

from lit_align.algorithms.base import AlignmentModule
from lit_align.data.batches import PairwiseBatch
from lit_align.metrics import PreferenceMetrics
from lit_align.ops import SequenceLogps
from lit_align.prefix_sharing import announce, check_setting, choose_layout


class PairLogps(NamedTuple):
    """Per-pair log-probs; reference ones are None when the algorithm runs without a reference."""

    policy_chosen: SequenceLogps
    policy_rejected: SequenceLogps
    reference_chosen: SequenceLogps | None
    reference_rejected: SequenceLogps | None


class PairwiseOutput(NamedTuple):
    """What ``pair_loss`` returns, whatever the method: per-pair ``losses`` [B] (their mean is the
    batch loss) and the implicit rewards of the chosen and rejected completions [B] (detached), which
    ``PreferenceMetrics`` logs as ``rewards/chosen|rejected|margins|accuracies``."""

    losses: torch.Tensor
    chosen_rewards: torch.Tensor
    rejected_rewards: torch.Tensor


def _halves(logps: SequenceLogps, n: int) -> tuple[SequenceLogps, SequenceLogps]:
    return SequenceLogps(logps.sum[:n], logps.count[:n]), SequenceLogps(logps.sum[n:], logps.count[n:])


class PairwiseAlignmentModule(AlignmentModule):
    """Subclasses implement ``pair_loss(logps) -> (PairwiseOutput, extra logs)``; this class runs chosen
    and rejected through one forward, reduces the loss, and keeps the implicit-reward metrics.

    Args:
        prefix_sharing: Run each pair as one row ``[prompt | chosen | rejected]`` whose mask keeps
            the rejected tokens from seeing the chosen ones, so the prompt is computed once per pair
            (Wang et al. 2024, arXiv 2410.20305; ``lit_align.prefix_sharing``). Same log-probs as the
            usual 2B-row forward up to float rounding; applies to the policy and to the live, adapter
            and precomputed reference. ``auto`` (default): share a batch when the model's attention
            takes the mask (sdpa, eager; flex_attention on CUDA) and the shared rows hold at most 3/4
            of the unshared token positions (prompts about as long as the completions or longer);
            what it decided, and why, is said once at start-up. ``true``: share every batch (models whose attention cannot take
            the mask fall back to the usual forward with one warning). ``false``: never.
        **kwargs: See ``AlignmentModule``.
    """

    def __init__(self, *args: Any, prefix_sharing: bool | str = "auto", **kwargs: Any) -> None:
        self.prefix_sharing = check_setting(prefix_sharing)  # before the model loads: a typo fails fast
        super().__init__(*args, **kwargs)

    def on_fit_start(self) -> None:
        announce(self.policy.policy, self.prefix_sharing)  # here, not in setup: the model is on its device now
        super().on_fit_start()

    def on_validation_start(self) -> None:
        announce(self.policy.policy, self.prefix_sharing)
        super().on_validation_start()

    def configure_metrics(self) -> PreferenceMetrics:
        return PreferenceMetrics()

    def pair_logps(self, batch: PairwiseBatch) -> PairLogps:
        n = batch.num_pairs
        rows = (batch.input_ids, batch.attention_mask, batch.loss_mask)
        # One layout serves the policy and the live reference: same architecture, same rows.
        layout = choose_layout(self.policy.policy, *rows, self.prefix_sharing)
        policy = _halves(self.policy.policy_logps(*rows, layout=layout), n)
        if not self.policy.has_reference:
            return PairLogps(*policy, None, None)
        reference = _halves(self.policy.reference_logps(*rows, batch=batch, layout=layout), n)
        return PairLogps(*policy, *reference)

    def pair_loss(self, logps: PairLogps) -> tuple[PairwiseOutput, dict[str, torch.Tensor]]:
        raise NotImplementedError

    def compute_loss(self, batch: PairwiseBatch, stage: str) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        logps = self.pair_logps(batch)
        out, logs = self.pair_loss(logps)
        tracked = self.track_metrics(stage, out.chosen_rewards, out.rejected_rewards, logps.policy_chosen.sum, logps.policy_rejected.sum)
        return out.losses.mean(), {**tracked, **logs}
