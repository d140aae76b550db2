"""Best-of-N distillation: BOND and J-BOND (Sessa et al. 2024, arXiv 2407.14622).

Notation: pi_ref the reference (or moving anchor), r the reward, N the Best-of-N size,
p_le(y) = P_{y' ~ pi_ref}[r(y') <= r(y)] and p_lt(y) = P[r(y') < r(y)] the reward quantiles of y
among reference samples, rho(y) = log pi(y|x) - log pi_ref(y|x). Log-probs are sequence sums.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from lit_align.errors import check_range
from lit_align.losses.policy_gradient import leave_one_out_baseline, reinforce  # noqa: F401  (BOND's REINFORCE terms)


def quantile_estimate(rewards: torch.Tensor, reference_rewards: torch.Tensor, strict: bool = False, prior: float = 0.0) -> torch.Tensor:
    """Monte-Carlo estimate of p_le(y) (or p_lt(y) with ``strict``) for each reward in ``rewards`` [B, k]
    against the m reference rewards of the same prompt, ``reference_rewards`` [B, m].

    ``prior = 0`` is the paper's plain MC estimate (1/m) sum_j 1[r(y'_j) <= r(y)], unbiased but 0
    when y loses to every reference sample, where log p_le = -inf. ``prior = 1`` is Laplace's rule
    (count + 1) / (m + 2): the posterior mean under a uniform prior on the quantile, and uniform is
    the right prior here, since p_le(Y) of Y ~ pi_ref is uniform on [0, 1] for a continuous reward
    (probability integral transform). It keeps log p_le finite and shrinks the crude small-m
    estimate toward 1/2; the algorithms use it.
    """
    compare = torch.lt if strict else torch.le
    counts = compare(reference_rewards.unsqueeze(1), rewards.unsqueeze(-1)).sum(-1).to(torch.float32)
    return (counts + prior) / (reference_rewards.shape[-1] + 2.0 * prior)


def bon_log_ratio(p_le: torch.Tensor, n: int, p_lt: torch.Tensor | None = None) -> torch.Tensor:
    """log pi_BoN(y) - log pi_ref(y) for Best-of-``n`` of pi_ref under reward r.

    Theorem 1 of the paper: with ties broken so that the reward order is total,
    pi_BoN(y) = P[all n draws <= y] - P[all n draws < y] = p_le^n - p_lt^n
              = pi_ref(y) * sum_{i=1..n} p_le^(n-i) * p_lt^(i-1),      since p_le - p_lt = pi_ref(y).
    Given ``p_lt`` this exact form is returned. Without it, the paper's approximation for a large
    output space (pi_ref(y) -> 0, so p_lt -> p_le): log n + (n - 1) log p_le(y).
    """
    if p_lt is None:
        return math.log(n) + (n - 1) * torch.log(p_le)
    # Geometric sum in log space: sum_i p_le^(n-i) p_lt^(i-1) = sum_i exp((n-i) log p_le + (i-1) log p_lt).
    i = torch.arange(1, n + 1, dtype=torch.float32, device=p_le.device)
    # xlogy(0, 0) = 0: the i = 1 term is p_le^(n-1) even when p_lt = 0 (y is the lowest reward).
    terms = torch.xlogy(n - i, p_le.unsqueeze(-1)) + torch.xlogy(i - 1, p_lt.unsqueeze(-1))
    return torch.logsumexp(terms, dim=-1)


def analytic_bon_kl(n: int) -> float:
    """KL(pi_BoN || pi_ref) = log n - (n - 1) / n: the known value for Best-of-n of a continuous-reward
    distribution, an upper bound otherwise (Beirami et al. 2024). Logged as a reference line."""
    return math.log(n) - (n - 1) / n


def empirical_bon_kl(rewards: torch.Tensor, n: int) -> torch.Tensor:
    """KL(Best-of-n || pi_ref) per row of m reference rewards [B, m], ties included.

    The plug-in value for the empirical distribution of the m samples: with p_le, p_lt the
    share of the row's samples scoring <= / < each sample and g = ``bon_log_ratio(p_le, n, p_lt)``
    (Theorem 1, tie-aware), KL = sum_y pi_BoN(y) g(y) = (1/m) sum_j exp(g_j) g_j. Ties lower it below
    log n - (n - 1)/n (a Best-of-n choice among equal rewards is no choice); so does a small m
    relative to n (Best-of-n of m atoms): trust it for n well below m.
    """
    p_le = quantile_estimate(rewards, rewards)
    p_lt = quantile_estimate(rewards, rewards, strict=True)
    g = bon_log_ratio(p_le, n, p_lt)
    return (g.exp() * g).mean(-1)


def expected_best_of_n(rewards: torch.Tensor, n: int) -> torch.Tensor:
    """Unbiased estimate of E[max of n rewards] per row from m >= n samples ``rewards`` [B, m].

    The U-statistic over all n-subsets: sorting r_(1) <= ... <= r_(m), the j-th smallest is the
    maximum of C(j-1, n-1) of the C(m, n) subsets. Lower variance than one max over n samples.
    """
    m = rewards.shape[-1]
    if n > m:
        raise ValueError(f"need at least n={n} samples per prompt to estimate Best-of-{n}, got {m}")
    weights = torch.tensor([math.comb(j - 1, n - 1) / math.comb(m, n) for j in range(1, m + 1)], dtype=rewards.dtype, device=rewards.device)
    return (rewards.sort(dim=-1).values * weights).sum(-1)


class BONDOutput(NamedTuple):
    """Per-prompt ``losses`` [B] and their two parts (detached)."""

    losses: torch.Tensor
    forward_losses: torch.Tensor
    backward_losses: torch.Tensor


def bond_loss(
    policy_best_logps: torch.Tensor,
    policy_sample_logps: torch.Tensor,
    reference_sample_logps: torch.Tensor,
    log_bon_ratios: torch.Tensor,
    beta: float = 0.5,
) -> BONDOutput:
    """The Jeffreys objective J_beta = (1 - beta) KL(pi_BoN || pi) + beta KL(pi || pi_BoN) (Sec. 4).

    * Forward part, on the best of n reference samples y_BoN ~ pi_BoN ([B] log pi(y_BoN)):
      -log pi(y_BoN), the cross-entropy H(pi_BoN, pi) = KL(pi_BoN || pi) + const, i.e. SFT on
      Best-of-N samples (mode covering).
    * Backward part, on k policy samples y ~ pi ([B, k]): KL(pi || pi_BoN) = E_pi[rho(y) - log_bon_ratio(y)]
      with log_bon_ratio = log n + (n - 1) log p_le(y) (``bon_log_ratio``). Its value is that MC
      estimate; its gradient is REINFORCE with reward R(y) = (n - 1) log p_le(y) - rho(y), i.e. RL
      on the reward log p_le(y) with KL-to-reference weight 1/(n - 1), scaled by n - 1 (mode seeking).

    ``beta = 0`` is the forward part alone, ``beta = 1`` the backward part alone (the paper uses 0.5).
    """
    check_range("bond_loss", "beta", beta, 0.0, 1.0)
    forward = -policy_best_logps
    log_ratio = policy_sample_logps.detach() - reference_sample_logps
    divergence = log_ratio - log_bon_ratios  # log pi(y) - log pi_BoN(y), per policy sample
    backward = (divergence + reinforce(policy_sample_logps, -divergence)).mean(-1)
    losses = (1.0 - beta) * forward + beta * backward
    return BONDOutput(losses, forward.detach(), backward.detach())


class JBONDOutput(NamedTuple):
    """Per-prompt ``losses`` [B], their three parts, and the crude J-BOND rewards [B, k] (detached)."""

    losses: torch.Tensor
    forward_losses: torch.Tensor
    backward_losses: torch.Tensor
    regularizer_losses: torch.Tensor
    jbond_rewards: torch.Tensor


def jbond_reward(sample_rewards: torch.Tensor, anchor_rewards: torch.Tensor, worst_penalty: float = math.log(16)) -> torch.Tensor:
    """J-BOND's crude stand-in for log p_le(y) from 2 anchor samples (Sec. 5, Alg. 2):
    r_J(y) = -log(16) if r(y) < min(r(y'_1), r(y'_2)), else 0.

    With two anchor samples the MC quantile is p_le in {0, 1/2, 1}; log 0 = -inf makes the plain
    estimate useless, so the paper penalises only the case where y loses to every anchor sample.
    Strictly below the minimum is exactly "MC estimate p_le(y) = 0" (p_le counts ties as <=), so a
    tie is not penalised. The constant log 16 is the paper's for exactly 2 anchor samples; ``JBOND``
    refuses other ``num_samples`` rather than reuse it for a different estimator.
    """
    worst = sample_rewards < anchor_rewards.amin(dim=-1, keepdim=True)
    return -worst_penalty * worst.to(sample_rewards.dtype if sample_rewards.is_floating_point() else torch.float32)


def jbond_loss(
    policy_best_logps: torch.Tensor,
    policy_sample_logps: torch.Tensor,
    anchor_sample_logps: torch.Tensor,
    jbond_rewards: torch.Tensor,
    beta: float = 0.5,
    kl_weight: float = 0.1,
    backward_kl: bool = True,
) -> JBONDOutput:
    """J-BOND's update direction (1 - beta) G_FW + beta G_BW + gamma G_Reg (Sec. 5, Alg. 2: the parameter update).

    Inputs: log pi_t of the better of the 2 anchor samples [B], log pi_t and log pi_anchor of the k
    policy samples [B, k], and their crude rewards r_J [B, k] (``jbond_reward``).

    * G_FW, forward KL(pi_BoN || pi_t): -grad log pi_t(y'_best), y'_best = argmax_i r(y'_i) of the
      two anchor samples (a sample of Best-of-2 of the anchor). Value: -log pi_t(y'_best).
    * G_BW, backward KL(pi_t || pi_BoN): policy gradient on the policy samples with the return
      R(y) = r_J(y) - (log pi_t(y) - log pi_anchor(y)) and a leave-one-out baseline. This is the
      gradient of E_pi_t[log pi_t - log pi_anchor - log pi_BoN/pi_anchor] with the log Best-of-2
      ratio log 2 + log p_le(y) replaced by r_J (the constant log 2 cancels against the baseline),
      so the log-ratio to the anchor stays in the return, as in BOND's backward term (Sec. 4).
      Value: E[rho(y) - r_J(y)], the MC estimate of that KL up to the constant log 2.
    * G_Reg, the extra regulariser gamma KL(pi_t || pi_anchor) (``kl_weight``), ON TOP of G_BW:
      REINFORCE with reward -rho(y); value E[rho(y)].

    ``backward_kl=False`` is OUR variant, not the paper's: G_BW uses r_J alone (value -E[r_J]), so
    the anchor pull is gamma instead of beta + gamma. Kept only to reproduce earlier runs.
    """
    check_range("jbond_loss", "beta", beta, 0.0, 1.0)
    forward = -policy_best_logps
    log_ratio = policy_sample_logps.detach() - anchor_sample_logps.detach()
    returns = jbond_rewards - log_ratio if backward_kl else jbond_rewards
    backward = (-returns + reinforce(policy_sample_logps, returns)).mean(-1)
    regularizer = (log_ratio + reinforce(policy_sample_logps, -log_ratio)).mean(-1)
    losses = (1.0 - beta) * forward + beta * backward + kl_weight * regularizer
    return JBONDOutput(losses, forward.detach(), backward.detach(), regularizer.detach(), jbond_rewards.detach())
