"""Policy-gradient math for RLOO, GRPO and PPO: advantages, surrogates, KL estimators, aggregation.

Pure torch, no Lightning. Shapes: R rollout rows (prompt-major, ``row = prompt * k + j``), T the
per-token axis of ``Rollout.completion_mask`` ([R, T-1] in the rollout), k samples per prompt.
Advantage functions return DETACHED tensors; the surrogates detach advantages and old log-probs
again, so each is a constant of the gradient wherever it comes from.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

# Schulman's KL estimators live in one place (lit_align.losses.kl): k1 = log pi - log pi_ref is the
# per-token penalty IN THE REWARD (PPO for RLHF, RLOO; REINFORCE on -beta k1 has expected gradient
# -beta grad KL(pi || pi_ref)); k3 = (r - 1) - log r, r = pi_ref / pi, is GRPO's LOSS TERM, whose
# expected gradient on samples of pi is that of KL(pi_ref || pi) (tests/test_policy_gradient.py).
from lit_align.losses.kl import kl_k1, kl_k3  # noqa: F401  (re-exported for the RL code)

AGGREGATIONS = ("seq_mean", "token_mean", "constant")


def masked_mean(values: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of ``values`` where ``mask`` is 1 (over everything, or along ``dim``; empty rows give 0)."""
    mask = mask.to(values.dtype)
    if dim is None:
        return (values * mask).sum() / mask.sum().clamp(min=1)
    return (values * mask).sum(dim) / mask.sum(dim).clamp(min=1)


# ----- advantages ---------------------------------------------------------------------------------
def leave_one_out_baseline(values: torch.Tensor) -> torch.Tensor:
    """Baseline for REINFORCE on [B, k] rewards: for each sample the mean of the OTHER samples of its
    prompt (k >= 2), else of the other prompts in the batch. Excluding the sample itself keeps the
    gradient estimate unbiased (the baseline does not depend on the action it is subtracted from)."""
    values = values.detach()
    b, k = values.shape
    if k >= 2:
        return (values.sum(-1, keepdim=True) - values) / (k - 1)
    if b >= 2:
        return (values.sum() - values) / (b - 1)
    return torch.zeros_like(values)


def reinforce(logps: torch.Tensor, rewards: torch.Tensor) -> torch.Tensor:
    """Zero-valued surrogate whose gradient is the REINFORCE estimate -(R - b) grad log pi(y).

    Adding it to a loss leaves the loss's VALUE unchanged (so the value can be a divergence
    estimate) while giving the policy-gradient direction that maximises E_pi[R].
    """
    advantages = rewards.detach() - leave_one_out_baseline(rewards)
    return -advantages * (logps - logps.detach())


def leave_one_out_advantages(rewards: torch.Tensor) -> torch.Tensor:
    """RLOO (Ahmadian et al. 2024, arXiv 2402.14740, Eq. 6) on rewards [B, k], k >= 2:

        A_i = r_i - 1/(k-1) sum_{j != i} r_j.

    The baseline leaves y_i out, so it is independent of y_i and E[A_i grad log pi(y_i)] = grad E[r]
    exactly (an unbiased REINFORCE estimate); a mean that includes r_i would shrink it by (k-1)/k.
    """
    if rewards.ndim != 2 or rewards.shape[1] < 2:
        raise ValueError(f"leave-one-out needs rewards [prompts, k >= 2], got shape {tuple(rewards.shape)}")
    rewards = rewards.detach()
    return rewards - leave_one_out_baseline(rewards)


def group_normalized_advantages(rewards: torch.Tensor, scale_by_std: bool = True, eps: float = 1e-4) -> torch.Tensor:
    """GRPO's outcome advantages (Shao et al. 2024, arXiv 2402.03300, Sec. 4.1.2) on rewards [B, k]:

        A_i = (r_i - mean(r)) / (std(r) + eps),   mean and std over the k samples of ONE prompt.

    std is the unbiased (Bessel) one, as TRL and verl compute it. ``scale_by_std=False`` is Dr. GRPO
    (Liu et al. 2025, arXiv 2503.20783, Sec. 3.1): dividing by std up-weights prompts whose samples
    nearly agree (too easy or too hard), a difficulty bias; without it A_i = r_i - mean(r).
    """
    if rewards.ndim != 2 or rewards.shape[1] < 2:
        raise ValueError(f"group normalisation needs rewards [prompts, k >= 2], got shape {tuple(rewards.shape)}")
    rewards = rewards.detach()
    centred = rewards - rewards.mean(-1, keepdim=True)
    return centred / (rewards.std(-1, keepdim=True) + eps) if scale_by_std else centred


def generalized_advantage_estimation(
    token_rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0, lam: float = 0.95
) -> tuple[torch.Tensor, torch.Tensor]:
    """GAE(gamma, lambda) (Schulman et al. 2016, arXiv 1506.02438, Eq. 16) per token, right-padded rows:

        delta_t = r_t + gamma V_{t+1} - V_t,   A_t = sum_l (gamma lambda)^l delta_{t+l},   returns_t = A_t + V_t.

    The episode ends at the last token where ``mask`` is 1 (V after it is 0: the completion is done,
    truncated or not, as in the RLHF PPO implementations, Huang et al. 2024, arXiv 2403.17031).
    Returns (advantages, returns), detached and zero outside ``mask``.
    """
    mask = mask.to(values.dtype)
    values, token_rewards = values.detach() * mask, token_rewards.detach() * mask
    advantages = torch.zeros_like(values)
    running = torch.zeros_like(values[:, 0])
    for t in reversed(range(values.shape[1])):
        next_value = values[:, t + 1] if t + 1 < values.shape[1] else torch.zeros_like(running)
        delta = token_rewards[:, t] + gamma * next_value - values[:, t]
        running = delta + gamma * lam * running
        advantages[:, t] = running
    advantages = advantages * mask
    return advantages, (advantages + values) * mask


def whiten(values: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, eps: float = 1e-8) -> torch.Tensor:
    """(x - mean) / std over the tokens where ``mask`` is 1 (the whole batch), PPO's advantage
    whitening (Huang et al. 2024, detail "advantage whitening"); std with Bessel's correction, as TRL.
    ``shift_mean=False`` rescales only (for rewards). Zero outside ``mask``."""
    mean = masked_mean(values, mask)
    count = mask.sum().clamp(min=2)
    variance = (((values - mean) * mask) ** 2).sum() / (count - 1)
    whitened = (values - mean) * torch.rsqrt(variance + eps)
    if not shift_mean:
        whitened = whitened + mean
    return whitened * mask


def kl_penalized_token_rewards(scores: torch.Tensor, kl: torch.Tensor, mask: torch.Tensor, beta: float) -> torch.Tensor:
    """Per-token rewards of RLHF (Ziegler et al. 2019, arXiv 1909.08593, Eq. 2; Ouyang et al. 2022):
    r_t = -beta kl_t at every completion token, plus the sequence score at its LAST token.
    ``kl`` is the k1 estimate log pi(y_t) - log pi_ref(y_t) (``kl_k1``); summed over a sequence it
    is score - beta (log pi(y) - log pi_ref(y)), RLOO's KL-penalised reward."""
    mask = mask.to(kl.dtype)
    rewards = -beta * kl.detach() * mask
    last = (mask * torch.arange(1, mask.shape[1] + 1, device=mask.device)).argmax(-1)
    return rewards.index_put((torch.arange(len(scores), device=mask.device), last), scores.detach().to(rewards.dtype), accumulate=True)


# ----- surrogates ---------------------------------------------------------------------------------
class SurrogateOutput(NamedTuple):
    """Unreduced ``losses``, the importance ``ratio`` pi/pi_old and ``clipped`` (where the clip is
    active, so the gradient is zero), all elementwise."""

    losses: torch.Tensor
    ratio: torch.Tensor
    clipped: torch.Tensor


def clipped_surrogate(logps: torch.Tensor, old_logps: torch.Tensor, advantages: torch.Tensor, clip_low: float | None = 0.2, clip_high: float | None = None) -> SurrogateOutput:
    """PPO's clipped objective (Schulman et al. 2017, arXiv 1707.06347, Eq. 7), as a loss, elementwise:

        L = -min(rho A, clip(rho, 1 - eps_low, 1 + eps_high) A),   rho = exp(log pi - log pi_old).

    Per token (GRPO, PPO) or per sequence (RLOO, with sequence log-prob sums). The gradient is zero
    where the clip binds: rho > 1 + eps_high with A > 0, rho < 1 - eps_low with A < 0.
    ``clip_high`` defaults to ``clip_low`` (DAPO's clip-higher sets it above); ``clip_low=None``:
    no clipping, -rho A, whose gradient at rho = 1 is REINFORCE's -A grad log pi.
    """
    advantages, old_logps = advantages.detach(), old_logps.detach()
    ratio = torch.exp(logps - old_logps)
    unclipped = -advantages * ratio
    if clip_low is None:
        return SurrogateOutput(unclipped, ratio, torch.zeros_like(unclipped, dtype=torch.bool))
    high = clip_low if clip_high is None else clip_high
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip_low, 1.0 + high)
    return SurrogateOutput(torch.maximum(unclipped, clipped), ratio, clipped > unclipped)


def clipped_value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, clip: float | None = 0.2) -> tuple[torch.Tensor, torch.Tensor]:
    """PPO's value loss, elementwise, with (Huang et al. 2024, detail "value function loss clipping"):

        L_V = 1/2 max((V - R)^2, (V_old + clip(V - V_old, -eps_v, eps_v) - R)^2).

    ``clip=None``: 1/2 (V - R)^2. Returns (losses, clipped: where the clipped term wins)."""
    returns, old_values = returns.detach(), old_values.detach()
    unclipped = (values - returns) ** 2
    if clip is None:
        return 0.5 * unclipped, torch.zeros_like(unclipped, dtype=torch.bool)
    change = values - old_values
    clipped = (old_values + torch.clamp(change, -clip, clip) - returns) ** 2
    # Where the clamp is inactive both terms are the same number up to the rounding of
    # V_old + (V - V_old); counting those as clipped would make the fraction a coin toss of the CPU.
    binds = (change.abs() > clip) & (clipped > unclipped)
    return 0.5 * torch.maximum(unclipped, clipped), binds


def aggregate(losses: torch.Tensor, mask: torch.Tensor, mode: str = "seq_mean", constant: float | None = None) -> torch.Tensor:
    """Reduce per-token ``losses`` [R, T] over the tokens where ``mask`` is 1:

    * ``seq_mean``: 1/R sum_i 1/|o_i| sum_t l_it, the GRPO paper's Eq. 3 (every sequence weighs
      the same, so a token of a long answer weighs less);
    * ``token_mean``: sum_it l_it / sum_i |o_i|, DAPO's token-level loss (arXiv 2503.14476, Eq. 8);
    * ``constant``: sum_it l_it / (R * C), Dr. GRPO (arXiv 2503.20783): a constant C (the generation
      budget) in place of |o_i|, so the normaliser does not depend on the length.
    """
    mask = mask.to(losses.dtype)
    if mode == "seq_mean":
        return ((losses * mask).sum(-1) / mask.sum(-1).clamp(min=1)).mean()
    if mode == "token_mean":
        return (losses * mask).sum() / mask.sum().clamp(min=1)
    if mode == "constant":
        if constant is None or constant <= 0:
            raise ValueError(f"aggregation 'constant' needs a positive normaliser, got {constant!r}")
        return (losses * mask).sum() / (losses.shape[0] * constant)
    raise ValueError(f"unknown loss aggregation {mode!r}; expected one of {', '.join(AGGREGATIONS)}")
