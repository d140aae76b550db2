"""Training throughput of any algorithm, measured the same way for all: ``throughput/tokens_per_sec``.

Tokens are the non-pad tokens of every policy forward that carries gradient (a forward pre-hook on
the policy's backbone — which runs whether the LM head is applied by the model's own forward or
by ``lit_align.head`` — counts ``attention_mask.sum()`` while grad is on): exactly the sequences the loss trains
on — chosen + rejected for pairwise methods, the unpaired samples for KTO, the best anchor sample and
the policy samples for BOND / J-BOND. Sampling (no grad) and reference forwards are not counted,
but their time is: the clock covers every training step end to end (data, sampling, forward,
backward, optimiser), and excludes validation and the sampled evaluation.
"""

from __future__ import annotations

import time
from typing import Any

import torch
from lightning import Callback, LightningModule, Trainer

from lit_align.head import backbone_of


class TokenThroughput(Callback):
    """Log ``throughput/train_tokens``, ``throughput/train_seconds``, ``throughput/tokens_per_sec`` and
    the sampling cost ``cost/samples_drawn``, ``cost/reward_queries`` at the end of training (and keep
    them on ``self.result``)."""

    def __init__(self) -> None:
        self.tokens = 0
        self.seconds = 0.0
        self.result: dict[str, float] = {}
        self._started: float | None = None
        self._handle = None

    def _count(self, module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        mask = kwargs.get("attention_mask")
        if torch.is_grad_enabled() and mask is not None:
            self.tokens += int(mask.sum())

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        policy = pl_module.policy.policy
        backbone = backbone_of(policy)  # runs on both head paths (compact and the model's own forward)
        hooked = policy if backbone is None else backbone
        self._handle = hooked.register_forward_pre_hook(self._count, with_kwargs=True)

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        self._started = time.perf_counter()

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self._started is not None:
            self.seconds += time.perf_counter() - self._started
            self._started = None

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
        self.result = {
            "throughput/train_tokens": float(self.tokens),
            "throughput/train_seconds": self.seconds,
            "throughput/tokens_per_sec": self.tokens / self.seconds if self.seconds else 0.0,
            # What an online method pays per run (lit_align.online.OnlineSampling's counters; 0 offline).
            "cost/samples_drawn": float(getattr(pl_module, "samples_drawn", 0)),
            "cost/reward_queries": float(getattr(pl_module, "reward_queries", 0)),
        }
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.log_metrics(self.result, step=trainer.global_step)
