"""Metrics of KTO (unpaired desirable/undesirable feedback), exact across batches and DDP ranks."""

from __future__ import annotations

import torch
from torchmetrics import Metric


class KTOMetrics(Metric):
    """Implicit rewards per kind of feedback, the reference point z0 and an accuracy-style summary.

    * ``rewards/desirable``, ``rewards/undesirable`` — mean beta * rho(y) over each kind;
    * ``rewards/margins`` — their difference;
    * ``rewards/accuracies`` — share of examples on their label's side of the reference point:
      beta * rho > beta * z0 for desirable, < for undesirable (the sign of the value function's
      argument, i.e. whether v(x, y) > lambda_y / 2);
    * ``logps/desirable``, ``logps/undesirable`` — mean policy log-prob sums;
    * ``kl`` — z0, averaged over the micro-batches it was estimated on.

    A kind absent from everything seen so far is left out of ``compute()`` rather than reported as 0.
    States are sums and counts (``dist_reduce_fx="sum"``), so two batches give the value of their union.
    """

    full_state_update = False
    sums = ("rewards_desirable", "rewards_undesirable", "logps_desirable", "logps_undesirable", "correct", "kl")
    counts = ("desirable", "undesirable", "batches")

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        for name in self.sums:
            self.add_state(name, default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        for name in self.counts:
            self.add_state(name, default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, rewards: torch.Tensor, desirable: torch.Tensor, policy_logps: torch.Tensor, kl: torch.Tensor, beta: float) -> None:
        rewards, logps, desirable = rewards.detach().double(), policy_logps.detach().double(), desirable.bool()
        undesirable = ~desirable
        threshold = beta * kl.detach().double()
        values = {
            "rewards_desirable": rewards[desirable].sum(),
            "rewards_undesirable": rewards[undesirable].sum(),
            "logps_desirable": logps[desirable].sum(),
            "logps_undesirable": logps[undesirable].sum(),
            "correct": ((rewards > threshold) & desirable).sum() + ((rewards < threshold) & undesirable).sum(),
            "kl": kl.detach().double(),
            "desirable": desirable.sum(),
            "undesirable": undesirable.sum(),
            "batches": 1,
        }
        # Out of place: states made under inference mode (a validate before fit) stay usable in training.
        for name, value in values.items():
            setattr(self, name, getattr(self, name) + value)

    def compute(self) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        for kind in ("desirable", "undesirable"):
            count = getattr(self, kind)
            if count > 0:
                out[f"rewards/{kind}"] = getattr(self, f"rewards_{kind}") / count
                out[f"logps/{kind}"] = getattr(self, f"logps_{kind}") / count
        if "rewards/desirable" in out and "rewards/undesirable" in out:
            out["rewards/margins"] = out["rewards/desirable"] - out["rewards/undesirable"]
        total = self.desirable + self.undesirable
        if total > 0:
            out["rewards/accuracies"] = self.correct / total
        if self.batches > 0:
            out["kl"] = self.kl / self.batches
        return {name: value.float() for name, value in out.items()}
