"""Loud warnings when a reward stops carrying information, so a run does not learn nothing in silence.

A reward that gives every sample of a batch the same score (a reward model that reads the wrong
token, the embedded task's lexicon on other text) leaves online DPO with no pair and BOND with a
constant quantile: the losses are 0 or constant and nothing says why. Each warning is said once per
run, on rank zero.
"""

from __future__ import annotations

import weakref

import torch
from lightning.pytorch.utilities import rank_zero_warn

# Training batches in a row without a usable pair before online DPO says so.
NO_PAIR_PATIENCE = 10

_warned_constant: "weakref.WeakSet" = weakref.WeakSet()  # rewards already warned about (a run builds its reward once)


def warn_if_constant(reward: object, scores: torch.Tensor) -> None:
    """Warn once per ``reward`` when all (at least 2) ``scores`` of one batch are equal."""
    flat = scores.detach().flatten()
    if flat.numel() < 2 or not bool((flat == flat[0]).all()) or reward in _warned_constant:
        return
    _warned_constant.add(reward)
    rank_zero_warn(
        f"lit_align: the reward {type(reward).__name__} gave all {flat.numel()} samples of a batch the same score ({flat[0].item():.6g}). "
        "Then every online DPO pair ties (no update), BOND's quantile is constant and eval/reward says nothing. Check that the reward "
        "reads these texts: a learned reward model must see the text plus one EOS (HFClassifierReward does, on every tokenizer; check its "
        "`model`, `label` and `template`), and the embedded task's lexicon (LexiconSentimentReward) scores only that task's words, 0 on other "
        "text. (Said once per run.)"
    )


class NoPairWatch:
    """Counts training batches in a row where online DPO found no usable pair; warns once at ``patience``."""

    def __init__(self, owner: str, patience: int | None = None) -> None:
        self.owner = owner
        self.patience = NO_PAIR_PATIENCE if patience is None else patience
        self.streak = 0
        self.warned = False

    def update(self, num_pairs: int, num_prompts: int) -> None:
        """Record one training batch of ``num_prompts`` prompts that gave ``num_pairs`` pairs."""
        self.streak = 0 if num_pairs else self.streak + 1
        if self.streak >= self.patience and not self.warned:
            self.warned = True
            rank_zero_warn(
                f"lit_align: {self.owner} found no usable pair in {self.streak} training batches in a row: on each of them the samples of "
                f"every prompt ({num_prompts} per batch) tied under the reward, so the loss was 0 and the policy did not move. Check the "
                "reward (it may score every text alike: see any warning about a constant reward), or make ties rarer with more "
                "num_samples, a higher sampling temperature or a finer-grained reward. (Said once per run.)"
            )
