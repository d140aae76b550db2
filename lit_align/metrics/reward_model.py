"""Reward-model metrics: pairwise accuracy and margin (sum states), and the rank correlation
between the learned reward and a ground-truth reward (stored scores, computed at epoch end)."""

from __future__ import annotations

import warnings

import torch
from torchmetrics import Metric
from torchmetrics.regression import SpearmanCorrCoef


class RewardModelMetrics(Metric):
    """rewards/chosen|rejected|margins|accuracies of a reward model, averaged over pairs.

    ``rewards/accuracies`` is the share of pairs with r(x, y_w) > r(x, y_l) (a tie counts as wrong,
    as in ``PreferenceMetrics``); ``rewards/margins`` the mean of r(x, y_w) - r(x, y_l). States are
    sums plus a pair count (``dist_reduce_fx="sum"``): the value over several batches or DDP ranks
    equals the value over their union exactly.
    """

    full_state_update = False
    names = ("rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies")

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        for name in self.names:
            self.add_state(name.replace("/", "_"), default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("pairs", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, chosen_rewards: torch.Tensor, rejected_rewards: torch.Tensor) -> None:
        chosen, rejected = chosen_rewards.detach().double(), rejected_rewards.detach().double()
        values = (chosen, rejected, chosen - rejected, (chosen > rejected).double())
        for name, value in zip(self.names, values):
            state = name.replace("/", "_")
            setattr(self, state, getattr(self, state) + value.sum())
        self.pairs = self.pairs + chosen.numel()  # out of place: states made under inference mode (validate) stay usable

    def compute(self) -> dict[str, torch.Tensor]:
        count = self.pairs.clamp(min=1).double()
        return {name: (getattr(self, name.replace("/", "_")) / count).float() for name in self.names}


class GoldRankCorrelation(SpearmanCorrCoef):
    """Spearman's rank correlation between learned rewards and ground-truth (gold) rewards.

    A rank correlation is not a sum of per-example terms, so this keeps every (learned, gold) score
    pair (``cat`` states, gathered across DDP ranks) and ranks them once at ``compute``; ties get
    their average rank (the usual tie correction, as ``scipy.stats.spearmanr``). Accumulating two
    batches therefore gives exactly the value of their union. Memory: two floats per scored
    completion, fine for validation sets.
    """

    def __init__(self, **kwargs) -> None:
        with warnings.catch_warnings():
            # torchmetrics warns that the states grow with the data: that is the point here.
            warnings.filterwarnings("ignore", message=".*will save all targets and predictions.*")
            super().__init__(**kwargs)

    def update(self, learned: torch.Tensor, gold: torch.Tensor) -> None:
        super().update(learned.detach().float().flatten(), gold.detach().float().flatten())
