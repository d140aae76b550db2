"""Registries of advantage estimators and policy losses (the shape of verl's ``core_algos.py``).

A new estimator or surrogate is one registered function; algorithms name it by a string that is
checked against the LIVE registry when the algorithm is built (``check_registered``), so a plug-in
that registers ``"my_estimator"`` before the CLI parses the config can use it from YAML.

    @register_advantage_estimator("reinforce")
    def reinforce(inputs: AdvantageInputs) -> Advantages:
        scores = sequence_rewards(inputs)
        return broadcast(scores, inputs.completion_mask)

Advantage estimators take ``AdvantageInputs`` and return ``Advantages`` ([R, T] token tensors,
detached). Policy losses take log-probs, old (sampling-time) log-probs, advantages and the mask
([R, T] each) plus ``PolicyLossSettings`` and return ``PolicyLoss`` (scalar loss, clip fraction).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, NamedTuple

import torch

from lit_align.errors import ConfigError
from lit_align.losses.policy_gradient import (
    aggregate,
    clipped_surrogate,
    generalized_advantage_estimation,
    group_normalized_advantages,
    leave_one_out_advantages,
    masked_mean,
)


@dataclass
class AdvantageInputs:
    """What an estimator may use. ``token_rewards`` [R, T]: the score at each row's last completion
    token plus any per-token KL penalty; ``values`` [R, T] from a critic (GAE only)."""

    token_rewards: torch.Tensor
    completion_mask: torch.Tensor
    num_samples: int
    values: torch.Tensor | None = None
    gamma: float = 1.0
    lam: float = 0.95


class Advantages(NamedTuple):
    advantages: torch.Tensor  # [R, T], zero outside the completion
    returns: torch.Tensor | None = None  # [R, T] value targets (GAE), else None


@dataclass
class PolicyLossSettings:
    """``clip_low``/``clip_high``: the ratio clip range (None: no clipping); ``aggregation`` and
    ``constant``: see ``lit_align.losses.policy_gradient.aggregate``."""

    clip_low: float | None = 0.2
    clip_high: float | None = None
    aggregation: str = "seq_mean"
    constant: float | None = None


class PolicyLoss(NamedTuple):
    loss: torch.Tensor  # scalar
    clip_fraction: torch.Tensor  # share of the loss's elements (tokens or sequences) where the clip binds


AdvantageEstimator = Callable[[AdvantageInputs], Advantages]
PolicyLossFunction = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, PolicyLossSettings], PolicyLoss]
ADVANTAGE_ESTIMATORS: dict[str, AdvantageEstimator] = {}
POLICY_LOSSES: dict[str, PolicyLossFunction] = {}


def register_advantage_estimator(name: str) -> Callable[[AdvantageEstimator], AdvantageEstimator]:
    def add(function: AdvantageEstimator) -> AdvantageEstimator:
        ADVANTAGE_ESTIMATORS[name] = function
        return function

    return add


def register_policy_loss(name: str) -> Callable[[PolicyLossFunction], PolicyLossFunction]:
    def add(function: PolicyLossFunction) -> PolicyLossFunction:
        POLICY_LOSSES[name] = function
        return function

    return add


def check_registered(owner: object, field: str, name: str, registry: dict) -> None:
    """ConfigError unless ``name`` is registered (read at call time, so plug-ins' entries count)."""
    if name not in registry:
        who = owner if isinstance(owner, str) else type(owner).__name__
        raise ConfigError(
            f"{who}: {field} {name!r} is not registered; choose one of {', '.join(sorted(registry))}, or register "
            f"yours with lit_align.online.estimators.register_{'advantage_estimator' if registry is ADVANTAGE_ESTIMATORS else 'policy_loss'} before the config is parsed"
        )


# ----- sequence-level helpers ---------------------------------------------------------------------
def sequence_rewards(inputs: AdvantageInputs) -> torch.Tensor:
    """Per-prompt view [B, k] of each row's total reward (score minus its summed KL penalty)."""
    totals = (inputs.token_rewards * inputs.completion_mask.to(inputs.token_rewards.dtype)).sum(-1)
    return totals.view(-1, inputs.num_samples)


def broadcast(advantages: torch.Tensor, mask: torch.Tensor) -> Advantages:
    """Sequence advantages [B, k] (or [R]) onto every completion token of their row."""
    return Advantages(advantages.reshape(-1, 1).detach() * mask.to(advantages.dtype))


@register_advantage_estimator("rloo")
def rloo(inputs: AdvantageInputs) -> Advantages:
    """Leave-one-out baseline over the k samples of a prompt (arXiv 2402.14740)."""
    return broadcast(leave_one_out_advantages(sequence_rewards(inputs)), inputs.completion_mask)


@register_advantage_estimator("grpo")
def grpo(inputs: AdvantageInputs) -> Advantages:
    """(r - mean) / std within each prompt's group (arXiv 2402.03300)."""
    return broadcast(group_normalized_advantages(sequence_rewards(inputs)), inputs.completion_mask)


@register_advantage_estimator("dr_grpo")
def dr_grpo(inputs: AdvantageInputs) -> Advantages:
    """r - mean within each prompt's group, no std (Dr. GRPO, arXiv 2503.20783)."""
    return broadcast(group_normalized_advantages(sequence_rewards(inputs), scale_by_std=False), inputs.completion_mask)


@register_advantage_estimator("gae")
def gae(inputs: AdvantageInputs) -> Advantages:
    """GAE(gamma, lambda) over per-token rewards and a critic's values (PPO)."""
    if inputs.values is None:
        raise ValueError("the 'gae' advantage estimator needs values from a critic (PPO's value head)")
    return Advantages(*generalized_advantage_estimation(inputs.token_rewards, inputs.values, inputs.completion_mask, inputs.gamma, inputs.lam))


# ----- policy losses ------------------------------------------------------------------------------
@register_policy_loss("token_clip")
def token_clip(logps: torch.Tensor, old_logps: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor, settings: PolicyLossSettings) -> PolicyLoss:
    """PPO's clipped surrogate per token, reduced by ``settings.aggregation`` (GRPO, PPO)."""
    out = clipped_surrogate(logps, old_logps, advantages, settings.clip_low, settings.clip_high)
    loss = aggregate(out.losses, mask, settings.aggregation, settings.constant)
    return PolicyLoss(loss, masked_mean(out.clipped.to(logps.dtype), mask).detach())


@register_policy_loss("sequence_clip")
def sequence_clip(logps: torch.Tensor, old_logps: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor, settings: PolicyLossSettings) -> PolicyLoss:
    """RLOO's sequence-level REINFORCE: -A_i pi(y_i)/pi_old(y_i) with the ratio of whole sequences
    (log-prob sums), optionally clipped; mean over sequences. On-policy its gradient is
    -A_i grad log pi(y_i) (the paper's Eq. 6); ``aggregation`` does not apply."""
    weights = mask.to(logps.dtype)
    sequence_logps, sequence_old = (logps * weights).sum(-1), (old_logps * weights).sum(-1)
    sequence_advantages = masked_mean(advantages, mask, dim=-1)
    out = clipped_surrogate(sequence_logps, sequence_old, sequence_advantages, settings.clip_low, settings.clip_high)
    return PolicyLoss(out.losses.mean(), out.clipped.to(logps.dtype).mean())
