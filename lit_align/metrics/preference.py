"""Implicit-reward metrics of pairwise methods, under the names TRL users read in TensorBoard."""

from __future__ import annotations

import torch
from torchmetrics import Metric


class PreferenceMetrics(Metric):
    """rewards/chosen|rejected|margins|accuracies and logps/chosen|rejected, averaged over pairs.

    States are sums plus a pair count (``dist_reduce_fx="sum"``), so the value over several
    batches — or several DDP ranks — equals the value over their union exactly, unlike an average
    of per-batch averages.
    """

    full_state_update = False
    names = ("rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies", "logps/chosen", "logps/rejected")

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        for name in self.names:
            self.add_state(name.replace("/", "_"), default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("pairs", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, chosen_rewards: torch.Tensor, rejected_rewards: torch.Tensor, chosen_logps: torch.Tensor, rejected_logps: torch.Tensor) -> None:
        chosen_rewards, rejected_rewards = chosen_rewards.detach().double(), rejected_rewards.detach().double()
        values = (
            chosen_rewards,
            rejected_rewards,
            chosen_rewards - rejected_rewards,
            (chosen_rewards > rejected_rewards).double(),
            chosen_logps.detach().double(),
            rejected_logps.detach().double(),
        )
        for name, value in zip(self.names, values):
            state = name.replace("/", "_")
            setattr(self, state, getattr(self, state) + value.sum())
        # Out of place: states made under inference mode (a validate before fit) stay usable in training.
        self.pairs = self.pairs + chosen_rewards.numel()

    def compute(self) -> dict[str, torch.Tensor]:
        count = self.pairs.clamp(min=1).double()
        return {name: (getattr(self, name.replace("/", "_")) / count).float() for name in self.names}
