"""KTO (arXiv 2402.01306): alignment from unpaired desirable/undesirable feedback."""

from __future__ import annotations

from typing import Any, Callable

import torch
from lightning.pytorch.utilities import rank_zero_warn

from lit_align.algorithms.base import AlignmentModule
from lit_align.data.batches import UnpairedBatch
from lit_align.errors import ConfigError, check_range
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
            the training data's counts leave that range, and which desirable_weight fixes it
            (``check_label_counts``, at fit start with the counts ``connect`` took from the DataModule).
            Both weights are >= 0 and at least one is > 0.
        **kwargs: See ``AlignmentModule``; ``reference`` is ``copy`` or ``adapter``.
    """

    supported_references = ("copy", "adapter")
    unsupported_reference_reason = (
        "KTO measures rewards against a reference model and scores the batch's mismatched pairs with it, "
        "which change every batch (so they cannot be precomputed)"
    )

    def __init__(self, beta: float = 0.1, desirable_weight: float = 1.0, undesirable_weight: float = 1.0, **kwargs: Any) -> None:
        check_range(self, "beta", beta, 0, low_open=True)
        check_range(self, "desirable_weight", desirable_weight, 0)
        check_range(self, "undesirable_weight", undesirable_weight, 0)
        if desirable_weight == 0 and undesirable_weight == 0:
            raise ConfigError("KTO: desirable_weight and undesirable_weight are both 0, so the loss is 0 and nothing trains; set at least one > 0 (the paper uses 1.0 and 1.0)")
        super().__init__(**kwargs)
        self.beta = beta
        self.desirable_weight = desirable_weight
        self.undesirable_weight = undesirable_weight
        self._label_counts: Callable[[], tuple[int, int]] | None = None

    def configure_metrics(self) -> KTOMetrics:
        return KTOMetrics()

    def connect(self, datamodule: Any) -> None:
        """Take the DataModule's ``label_counts`` (``UnpairedDataModule``), read at fit start once the data is set up."""
        super().connect(datamodule)
        self.use_label_counts(getattr(datamodule, "label_counts", None))

    def use_label_counts(self, label_counts: Callable[[], tuple[int, int]] | None) -> None:
        """Where (n_desirable, n_undesirable) of the training data come from, for ``check_label_counts``
        at fit start; None turns the check off."""
        self._label_counts = label_counts

    def check_label_counts(self, num_desirable: int, num_undesirable: int) -> str | None:
        """Warn when lambda_D n_D / (lambda_U n_U) leaves the paper's range [1, 4/3] (Eq. 8); returns the warning or None."""
        message = check_weight_ratio(num_desirable, num_undesirable, self.desirable_weight, self.undesirable_weight)
        if message:
            rank_zero_warn(message)
        return message

    def on_fit_start(self) -> None:
        super().on_fit_start()
        if self._label_counts is not None:
            self.check_label_counts(*self._label_counts())

    def compute_loss(self, batch: UnpairedBatch, stage: str) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        n = batch.num_examples
        rows = (batch.input_ids, batch.attention_mask, batch.loss_mask)
        policy = self.policy.policy_logps(*(t[:n] for t in rows))
        reference = self.policy.reference_logps(*rows, batch=batch).sum
        if batch.input_ids.shape[0] > n:
            with torch.no_grad():
                policy_kl = self.policy.policy_logps(*(t[n:] for t in rows)).sum
        else:  # a batch of one has no mismatched pair; z0 then comes from other ranks or is 0
            policy_kl = reference[n:]
        out = kto_loss(policy.sum, reference[:n], batch.labels, policy_kl, reference[n:], self.beta, self.desirable_weight, self.undesirable_weight)
        logs = self.track_metrics(stage, out.rewards, batch.labels, policy.sum, out.kl, self.beta)
        return out.losses.mean(), logs
