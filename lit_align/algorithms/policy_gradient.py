"""Shared part of RLOO, GRPO and PPO: rollouts, KL control, advantages, and mu epochs of minibatch
updates over each rollout batch. Each method is its defaults plus (PPO) a critic.

One training step (one rollout batch, which serves several optimiser steps):

1. sample k completions per prompt from the current policy (k = the data's ``num_samples``),
   score them with ``reward``, and take per-token log-probs of the sampling policy (no grad, right
   after sampling, as TRL and OpenRLHF do) and of the reference (``OnlineSampling.rollout``);
2. KL control: ``kl_penalty: reward`` puts -beta k1_t in each token's reward (PPO for RLHF, RLOO);
   ``loss`` adds beta k3 as a loss term (GRPO); Schulman's estimators, ``lit_align.losses.kl``;
3. advantages by the registered ``advantage_estimator`` (``lit_align.online.estimators``);
4. ``num_epochs`` passes over the rollout in ``num_minibatches`` shuffled minibatches, each one
   optimiser step on the registered ``policy_loss`` (ratio against the SAMPLING log-probs).

An inner loop in ``training_step`` takes all but the last minibatch step; Lightning takes the last
(so ``global_step`` counts rollout batches, the LR schedule steps once per rollout as in TRL's PPO,
and ``gradient_clip_val`` clips every step). A checkpoint falls between rollout batches, so a
resumed run replays from the next batch with the same seeds (they depend on the step). The inner
steps bypass a ``16-mixed`` gradient scaler: use fp32 or bf16 with ``num_epochs * num_minibatches > 1``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import Any, ClassVar, Literal

import torch

from lit_align.algorithms.base import AlignmentModule
from lit_align.errors import ConfigError, check_range
from lit_align.losses.kl import kl_k1, kl_k3
from lit_align.losses.policy_gradient import AGGREGATIONS, aggregate, kl_penalized_token_rewards, masked_mean
from lit_align.online.estimators import ADVANTAGE_ESTIMATORS, POLICY_LOSSES, AdvantageInputs, PolicyLossSettings, check_registered
from lit_align.online.rollout import Rollout, token_logps
from lit_align.online.sampling import OnlineSampling

KLPenalty = Literal["reward", "loss"]
Aggregation = Literal["seq_mean", "token_mean", "constant"]
SHUFFLE_STREAM = 1  # seed stream of the minibatch order (stream 0 is the samples)


@dataclass
class Experience:
    """A rollout and what the updates take from it, row-aligned: advantages [R, T-1] and (PPO) the
    value targets and the values at sampling time."""

    rollout: Rollout
    advantages: torch.Tensor
    returns: torch.Tensor | None = None
    old_values: torch.Tensor | None = None

    def select(self, rows: torch.Tensor) -> "Experience":
        """The rows ``rows`` (a minibatch), every tensor and id list alike."""
        r, index = self.rollout, rows.tolist()
        tensors = {f.name: getattr(r, f.name)[rows] for f in fields(r) if isinstance(getattr(r, f.name), torch.Tensor)}
        rollout = replace(r, prompt_ids=[r.prompt_ids[i] for i in index], completion_ids=[r.completion_ids[i] for i in index], **tensors)
        returns, old_values = (None if t is None else t[rows] for t in (self.returns, self.old_values))
        return Experience(rollout, self.advantages[rows], returns, old_values)


class PolicyGradient(OnlineSampling, AlignmentModule):
    """Base of RLOO, GRPO and PPO (see the module docstring for one step).

    Args:
        kl_coef: beta, weight of the KL to the reference (0: no reference needed, ``reference: none`` allowed).
        kl_penalty: ``reward``: -beta k1 per token in the reward; ``loss``: beta k3 as a loss term.
        advantage_estimator: A name in ``lit_align.online.estimators.ADVANTAGE_ESTIMATORS``
            (built in: ``rloo``, ``grpo``, ``dr_grpo``, ``gae``); default per method.
        policy_loss: A name in ``POLICY_LOSSES`` (``token_clip``, ``sequence_clip``); default per method.
        clip_range: epsilon of the ratio clip; null: no clipping.
        clip_range_high: Upper epsilon if different (DAPO's clip-higher); null: ``clip_range``.
        loss_aggregation: ``seq_mean`` (GRPO paper), ``token_mean`` (DAPO) or ``constant`` (Dr. GRPO;
            the normaliser is the data's ``max_new_tokens``); for token-level losses and the k3 term.
        num_epochs: mu, optimisation passes over each rollout batch.
        num_minibatches: Minibatches per pass (one optimiser step each).
        **kwargs: ``reward`` (see ``OnlineSampling``) and ``AlignmentModule``'s.
    """

    supported_references: ClassVar[tuple[str, ...]] = ("copy", "adapter", "none")
    unsupported_reference_reason: ClassVar[str] = "the completions are sampled anew every step, so their reference log-probs cannot be precomputed"
    default_advantage_estimator: ClassVar[str] = "rloo"
    default_policy_loss: ClassVar[str] = "token_clip"
    min_samples: ClassVar[int] = 2  # k needed by the advantage estimator (group baselines)
    gamma: float = 1.0  # GAE's discount and lambda (PPO sets them)
    lam: float = 0.95

    def __init__(
        self,
        kl_coef: float = 0.05,
        kl_penalty: KLPenalty = "reward",
        advantage_estimator: str | None = None,
        policy_loss: str | None = None,
        clip_range: float | None = 0.2,
        clip_range_high: float | None = None,
        loss_aggregation: Aggregation = "seq_mean",
        num_epochs: int = 1,
        num_minibatches: int = 1,
        **kwargs: Any,
    ) -> None:
        check_range(self, "kl_coef", kl_coef, 0.0)
        check_range(self, "clip_range", clip_range, 0.0, 1.0, low_open=True, allow_none=True)
        check_range(self, "clip_range_high", clip_range_high, 0.0, low_open=True, allow_none=True)
        check_range(self, "num_epochs", num_epochs, 1, integer=True)
        check_range(self, "num_minibatches", num_minibatches, 1, integer=True)
        if kl_penalty not in ("reward", "loss"):
            raise ConfigError(f"{type(self).__name__}: kl_penalty must be 'reward' (k1 per token in the reward) or 'loss' (k3 loss term), got {kl_penalty!r}")
        if loss_aggregation not in AGGREGATIONS:
            raise ConfigError(f"{type(self).__name__}: loss_aggregation must be one of {', '.join(AGGREGATIONS)}, got {loss_aggregation!r}")
        self.advantage_estimator = advantage_estimator or self.default_advantage_estimator
        self.policy_loss = policy_loss or self.default_policy_loss
        check_registered(self, "advantage_estimator", self.advantage_estimator, ADVANTAGE_ESTIMATORS)
        check_registered(self, "policy_loss", self.policy_loss, POLICY_LOSSES)
        if kl_coef > 0 and kwargs.get("reference") == "none":
            raise ConfigError(f"{type(self).__name__}: kl_coef={kl_coef} needs a reference; set reference to copy or adapter, or kl_coef to 0")
        super().__init__(**kwargs)
        self.kl_coef, self.kl_penalty, self.loss_aggregation = kl_coef, kl_penalty, loss_aggregation
        self.clip_range, self.clip_range_high = clip_range, clip_range_high
        self.num_epochs, self.num_minibatches = int(num_epochs), int(num_minibatches)

    def connect(self, datamodule: Any) -> None:
        super().connect(datamodule)
        if self.settings.temperature != 1.0:
            # The ratio and the KL need the log-probs of the distribution that sampled; ours are at temperature 1.
            raise ConfigError(f"{type(self).__name__} computes log-probs of the policy itself, so it must sample at temperature 1; set data.init_args.temperature to 1.0 (got {self.settings.temperature})")
        if self.settings.num_samples < self.min_samples:
            raise ConfigError(f"{type(self).__name__} with advantage_estimator {self.advantage_estimator!r} needs k >= {self.min_samples} samples per prompt; set data.init_args.num_samples >= {self.min_samples} (got {self.settings.num_samples})")

    # ----- hooks PPO fills in --------------------------------------------------------------------
    def rollout_values(self, rollout: Rollout) -> torch.Tensor | None:
        """Per-token values [R, T-1] at sampling time (a critic), or None."""
        return None

    def normalize_advantages(self, advantages: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return advantages

    def auxiliary_loss(self, experience: Experience) -> tuple[torch.Tensor | None, dict[str, torch.Tensor]]:
        """An extra loss term on a minibatch (PPO: the value loss), or None."""
        return None, {}

    # ----- one rollout batch ---------------------------------------------------------------------
    @property
    def uses_reference(self) -> bool:
        return self.kl_coef > 0

    def loss_settings(self) -> PolicyLossSettings:
        return PolicyLossSettings(self.clip_range, self.clip_range_high, self.loss_aggregation, float(self.settings.max_new_tokens))

    @torch.no_grad()
    def experience(self, batch: Any, stage: str) -> tuple[Experience, dict[str, torch.Tensor]]:
        """Sample, score, KL-penalise and estimate advantages for ``batch``'s prompts."""
        k = self.settings.num_samples
        rollout = self.rollout(self.policy.policy, batch, k, self.draw_seed(stage), sample_logps=True, reference_logps=self.uses_reference)
        mask = rollout.completion_mask.to(torch.float32)
        kl = kl_k1(rollout.sample_logps, rollout.reference_logps) * mask if self.uses_reference else torch.zeros_like(mask)
        reward_beta = self.kl_coef if self.kl_penalty == "reward" else 0.0
        token_rewards = kl_penalized_token_rewards(rollout.rewards, kl, mask, reward_beta)
        values = self.rollout_values(rollout)
        estimate = ADVANTAGE_ESTIMATORS[self.advantage_estimator](AdvantageInputs(token_rewards, mask, k, values, self.gamma, self.lam))
        advantages = self.normalize_advantages(estimate.advantages, mask)
        token_advantages = advantages[mask.bool()]
        logs = {
            "reward": rollout.rewards.mean(),
            "reward_std": rollout.rewards.std() if rollout.num_rows > 1 else torch.zeros(()),
            # -log pi of the sampled tokens: a one-sample estimate of the per-token entropy (temperature 1).
            "entropy": masked_mean(-rollout.sample_logps, mask),
            "advantage_mean": token_advantages.mean(),
            "advantage_std": token_advantages.std() if token_advantages.numel() > 1 else torch.zeros(()),
            "response_length": rollout.completion_lengths.float().mean(),
        }
        if self.uses_reference:
            logs["kl"] = kl.sum(-1).mean()  # sequence KL(pi || pi_ref), k1, averaged over samples
        return Experience(rollout, advantages, estimate.returns, values), logs

    def experience_loss(self, experience: Experience) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The loss of one minibatch: the policy loss (+ beta k3) (+ the auxiliary loss)."""
        rollout = experience.rollout
        mask = rollout.completion_mask
        logps = token_logps(self.policy.policy, rollout, self.policy.head_mode)
        # The ratio's denominator is the SAMPLING policy's log-probs, fixed for all mu epochs.
        out = POLICY_LOSSES[self.policy_loss](logps, rollout.sample_logps, experience.advantages, mask, self.loss_settings())
        loss, logs = out.loss, {"policy_loss": out.loss.detach(), "clip_fraction": out.clip_fraction}
        if self.uses_reference and self.kl_penalty == "loss":
            kl_term = aggregate(kl_k3(logps, rollout.reference_logps), mask, self.loss_aggregation, float(self.settings.max_new_tokens))
            loss = loss + self.kl_coef * kl_term
            logs["kl_loss"] = kl_term.detach()
        extra, extra_logs = self.auxiliary_loss(experience)
        if extra is not None:
            loss = loss + extra
        return loss, {**logs, **extra_logs}

    def compute_loss(self, batch: Any, stage: str) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """One rollout and the loss of one on-policy pass over it (validation, tests)."""
        experience, logs = self.experience(batch, stage)
        loss, step_logs = self.experience_loss(experience)
        return loss, {**logs, **step_logs}

    def minibatches(self, rows: int) -> list[torch.Tensor]:
        """Row indices of the ``num_epochs`` x ``num_minibatches`` minibatches of a rollout of ``rows`` rows
        (each pass reshuffled, seeded by the step: a resumed run replays the same order)."""
        size = math.ceil(rows / self.num_minibatches)
        generator = torch.Generator().manual_seed(self.draw_seed("train", SHUFFLE_STREAM))
        batches = []
        for _ in range(self.num_epochs):
            order = torch.randperm(rows, generator=generator) if self.num_minibatches > 1 else torch.arange(rows)
            batches += [order[start : start + size].to(self.device) for start in range(0, rows, size)]
        return batches

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        """One rollout batch: the inner loop takes all but the last minibatch step itself (clipped to the
        trainer's ``gradient_clip_val``); the last minibatch's loss goes back to Lightning, whose
        optimiser step, clipping and LR schedule close the batch. So ``global_step`` counts rollout
        batches and the schedule steps once per rollout (as TRL's PPO)."""
        self.batch_index = batch_idx
        experience, logs = self.experience(batch, "train")
        minibatches = self.minibatches(experience.rollout.num_rows)
        optimizer = self.optimizers().optimizer  # the torch optimiser: inner steps are ours, not Lightning's
        clip = self.trainer.gradient_clip_val
        totals: dict[str, torch.Tensor] = {}
        for index, rows in enumerate(minibatches):
            loss, step_logs = self.experience_loss(experience.select(rows))
            for key, value in {"loss": loss, **step_logs}.items():
                totals[key] = totals.get(key, 0.0) + value.detach().float() / len(minibatches)
            if index + 1 < len(minibatches):
                loss.backward()
                if clip:
                    torch.nn.utils.clip_grad_norm_(list(self.trainable_parameters()), clip)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
        self.log("train/loss", totals.pop("loss"), prog_bar=True, on_step=True, batch_size=len(batch))
        self.log_dict({f"train/{k}": v.float() for k, v in {**logs, **totals}.items()}, on_step=True, batch_size=len(batch))
        return loss
