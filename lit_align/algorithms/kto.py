"""KTO (arXiv 2402.01306): alignment from unpaired desirable/undesirable feedback."""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import nn

from lit_align.algorithms.base import AlignmentModule
from lit_align.data.batches import UnpairedBatch
from lit_align.losses import check_weight_ratio, kto_loss
from lit_align.metrics import KTOMetrics


class KTO(AlignmentModule):
    """Kahneman-Tversky Optimization on unpaired batches (``UnpairedDataModule``).

    The reference point z0 is estimated per micro-batch (not over the gradient-accumulated batch)
    from the batch's mismatched pairs, with the policy under ``no_grad``: z0 is detached in the
    paper, so those rows need no activations kept for backward.

    Args:
        beta: Risk-aversion / KL strength of the value function; 0.1 in the paper.
        desirable_weight: lambda_D, the weight of desirable examples' losses.
        undesirable_weight: lambda_U, the weight of undesirable examples' losses. The paper
            recommends lambda_D n_D / (lambda_U n_U) in [1, 4/3] (Eq. 8); a warning says when
            the training data's counts leave that range, and which desirable_weight fixes it.
        **kwargs: See ``AlignmentModule``.
    """

    def __init__(self, beta: float = 0.1, desirable_weight: float = 1.0, undesirable_weight: float = 1.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not self.policy.has_reference:
            raise ValueError("KTO measures rewards against a reference model; use reference='copy'")
        self.beta = beta
        self.desirable_weight = desirable_weight
        self.undesirable_weight = undesirable_weight
        # Keyed by stage; "train" itself cannot be a ModuleDict key (it would shadow nn.Module.train).
        self.metrics = nn.ModuleDict({"train_metrics": KTOMetrics(), "val_metrics": KTOMetrics()})

    def on_fit_start(self) -> None:
        label_counts = getattr(self.trainer.datamodule, "label_counts", None)
        message = check_weight_ratio(*label_counts(), self.desirable_weight, self.undesirable_weight) if label_counts else None
        if message:
            rank_zero_warn(message)

    def compute_loss(self, batch: UnpairedBatch, stage: str) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        n = batch.num_examples
        rows = (batch.input_ids, batch.attention_mask, batch.loss_mask)
        policy = self.policy.policy_logps(*(t[:n] for t in rows))
        reference = self.policy.reference_logps(*rows).sum
        if batch.input_ids.shape[0] > n:
            with torch.no_grad():
                policy_kl = self.policy.policy_logps(*(t[n:] for t in rows)).sum
        else:  # a batch of one has no mismatched pair; z0 then comes from other ranks or is 0
            policy_kl = reference[n:]
        out = kto_loss(policy.sum, reference[:n], batch.labels, policy_kl, reference[n:], self.beta, self.desirable_weight, self.undesirable_weight)
        logs = self.track_metrics(stage, out.rewards, batch.labels, policy.sum, out.kl, self.beta)
        return out.losses.mean(), logs
