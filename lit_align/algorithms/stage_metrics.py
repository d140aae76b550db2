"""Per-stage metrics of an algorithm: one copy of its ``configure_metrics()`` metric per stage, fed by
``track_metrics``, computed per training step over every DDP rank and per validation epoch."""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import nn
from torchmetrics import Metric


class StageMetrics:
    """Mixin of ``AlignmentModule`` (a LightningModule): the metric plumbing, apart from the training logic."""

    def build_stage_metrics(self) -> None:
        """Called once by ``__init__``: keep one copy of ``configure_metrics()`` per stage."""
        metric = self.configure_metrics()
        if metric is not None:
            # Keyed by stage; "train" itself cannot be a ModuleDict key (it would shadow nn.Module.train).
            self.metrics = nn.ModuleDict({"train_metrics": metric, "val_metrics": metric.clone()})

    def stage_metric(self, stage: str) -> Metric | None:
        metrics = getattr(self, "metrics", None)
        return None if metrics is None or f"{stage}_metrics" not in metrics else metrics[f"{stage}_metrics"]

    def configure_metrics(self) -> Metric | None:
        """The torchmetrics ``Metric`` this algorithm tracks, or None. Called once by ``__init__`` (after
        the policy is built, before the subclass's own attributes are set); the base keeps one copy per
        stage and ``track_metrics`` feeds it. ``compute()`` returns a dict logged under ``train/``/``val/``."""
        return None

    def track_metrics(self, stage: str, *args: Any) -> dict[str, torch.Tensor]:
        """Feed this stage's copy of the ``configure_metrics()`` metric with ``update(*args)``.

        Both stages accumulate, and the base logs exact values (sum/count states, reduced over DDP
        ranks): training's for each step's global batch (``train_step_metrics``), validation's for the
        epoch (``on_validation_epoch_end_metrics``). Returns ``{}``, for callers that merge it into their logs.
        """
        self.stage_metric(stage).update(*args)
        return {}

    def train_step_metrics(self) -> dict[str, torch.Tensor]:
        """This step's training metrics over every rank's share of the batch, then reset; ``{}`` when no
        rank fed the metric (online DPO without a usable pair). ``_step`` calls it on every rank at every
        step, because the reduction is a collective: an algorithm may feed the metric on some ranks only."""
        metric = self.stage_metric("train")
        if metric is None:
            return {}
        fed = metric.update_count > 0
        if self._trainer is not None:
            fed = self.trainer.strategy.reduce_boolean_decision(fed, all=False)
        with warnings.catch_warnings():  # a rank without a share computes too (its zero states join the sum)
            warnings.filterwarnings("ignore", message=r"The ``compute`` method of metric")
            values = metric.compute() if fed else {}
        metric.reset()
        return values

    def on_validation_epoch_end_metrics(self) -> dict[str, torch.Tensor]:
        """Epoch-level validation metrics accumulated by ``track_metrics``; logged under ``val/``."""
        metric = self.stage_metric("val")
        if metric is None:
            return {}
        values = metric.compute()
        metric.reset()
        return values
