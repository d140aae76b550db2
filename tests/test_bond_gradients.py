"""Gradients of BOND / J-BOND pinned to closed forms on a categorical "policy" (arXiv 2407.14622).

The REINFORCE surrogates are zero-valued, so value tests cannot see a flipped or missing gradient.
Here the policy is softmax(theta) over K outcomes; every random quantity (Best-of-N samples, anchor
samples, policy samples) is enumerated and each row of the loss is weighted by its probability,
so the expected gradient through our loss functions is computed exactly and compared with the
closed-form gradient of each objective at float64 precision. For softmax logits:

    grad_theta KL(p || pi)           = pi - p                                 (forward KL, fixed p)
    grad_theta E_pi[g(y)]            = pi * (g - E_pi[g])                      (g not depending on theta)
    grad_theta E_pi[log pi - log q]  = pi * (f - E_pi[f]),  f = log pi - log q  (backward KL)
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from lit_align.losses.bond import bon_log_ratio, bond_loss, jbond_loss, jbond_reward

K = 4
REFERENCE = torch.tensor([0.1, 0.4, 0.2, 0.3], dtype=torch.float64)  # pi_ref, or the J-BOND anchor
REWARDS = torch.tensor([0.3, -1.0, 0.3, 2.0], dtype=torch.float64)  # outcomes 0 and 2 tie
THETA = torch.tensor([0.2, -0.3, 0.5, 0.1], dtype=torch.float64)


def quantiles(probs: torch.Tensor, rewards: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact p_le(y) = P[r(y') <= r(y)] and p_lt(y) = P[r(y') < r(y)] under ``probs``."""
    le = (rewards.unsqueeze(0) <= rewards.unsqueeze(1)).to(probs.dtype) @ probs
    lt = (rewards.unsqueeze(0) < rewards.unsqueeze(1)).to(probs.dtype) @ probs
    return le, lt


def score_gradient(pi: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """grad_theta sum_y pi(y) g(y) for pi = softmax(theta) and g held fixed: pi * (g - E_pi[g])."""
    return pi * (g - (pi * g).sum())


def weighted_gradient(loss_rows: torch.Tensor, weights: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    (grad,) = torch.autograd.grad((weights * loss_rows).sum(), theta, retain_graph=True)
    return grad


@pytest.mark.parametrize("n", [2, 3])
@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0])
def test_bond_loss_gradient_is_the_jeffreys_gradient(n, beta):
    """E[grad bond_loss] = grad J_beta = (1 - beta) grad KL(pi_BoN || pi) + beta grad KL(pi || pi_BoN)."""
    p_le, p_lt = quantiles(REFERENCE, REWARDS)
    log_ratio = bon_log_ratio(p_le, n, p_lt)  # exact, tie-aware (Theorem 1)
    bon = REFERENCE * log_ratio.exp()
    assert bon.sum().item() == pytest.approx(1.0, abs=1e-12)
    theta = THETA.clone().requires_grad_(True)
    log_pi = torch.log_softmax(theta, 0)
    pi = log_pi.exp().detach()

    forward_grad = pi - bon
    backward_grad = score_gradient(pi, log_pi.detach() - bon.log())
    expected = (1 - beta) * forward_grad + beta * backward_grad

    # Rows: (y_BoN, y_1, y_2) with y_BoN ~ pi_BoN and k = 2 policy samples y_i ~ pi.
    rows = torch.tensor(list(itertools.product(range(K), repeat=3)))
    weights = bon[rows[:, 0]] * pi[rows[:, 1]] * pi[rows[:, 2]]
    samples = rows[:, 1:]
    out = bond_loss(log_pi[rows[:, 0]], log_pi[samples], REFERENCE.log()[samples], log_ratio[samples], beta=beta)
    assert torch.allclose(weighted_gradient(out.losses, weights, theta), expected, atol=1e-12, rtol=0)
    # The value is the expected cross-entropy + backward KL: (1 - beta) (KL_fwd + H(pi_BoN)) + beta KL_bwd.
    kl_backward = (pi * (log_pi.detach() - bon.log())).sum()
    cross_entropy = -(bon * log_pi.detach()).sum()
    assert (weights * out.losses.detach()).sum().item() == pytest.approx(((1 - beta) * cross_entropy + beta * kl_backward).item(), abs=1e-12)


def jbond_rows(pi: torch.Tensor, anchor: torch.Tensor):
    """Every (y'_1, y'_2, y_1, y_2): 2 anchor samples and 2 policy samples, with its probability."""
    rows = torch.tensor(list(itertools.product(range(K), repeat=4)))
    weights = anchor[rows[:, 0]] * anchor[rows[:, 1]] * pi[rows[:, 2]] * pi[rows[:, 3]]
    anchors, samples = rows[:, :2], rows[:, 2:]
    # The better anchor sample, ties to the first (BestOfNBatch.best_completions uses argmax).
    best = torch.where(REWARDS[anchors[:, 1]] > REWARDS[anchors[:, 0]], anchors[:, 1], anchors[:, 0])
    crude = jbond_reward(REWARDS[samples], REWARDS[anchors])
    return weights, best, samples, crude


def jbond_parts(pi: torch.Tensor, log_pi: torch.Tensor, anchor: torch.Tensor, penalty: float = math.log(16)):
    """Closed-form gradients of J-BOND's three parts (Alg. 2) for policy softmax(theta) and a fixed anchor."""
    p_le, p_lt = quantiles(anchor, REWARDS)
    best_of_2 = anchor * (p_le + p_lt)  # Best-of-2 of the anchor, ties to the first sample
    expected_crude = -penalty * (1 - p_le) ** 2  # E[r_J(y)]: both anchor samples beat y
    rho = log_pi - anchor.log()
    return {
        "forward": pi - best_of_2,  # grad KL(Best-of-2(anchor) || pi)
        "backward": score_gradient(pi, rho - expected_crude),  # grad E_pi[rho - r_J]: policy gradient, return r_J - rho
        "backward_variant": score_gradient(pi, -expected_crude),  # our earlier variant: return r_J only
        "regularizer": score_gradient(pi, rho),  # grad KL(pi || pi_anchor)
    }


@pytest.mark.parametrize("beta,gamma", [(1.0, 0.0), (0.0, 0.0), (0.0, 1.0), (0.5, 0.1)])
def test_jbond_loss_gradient_matches_each_part_of_algorithm_2(beta, gamma):
    anchor = torch.tensor([0.3, 0.2, 0.25, 0.25], dtype=torch.float64)  # the anchor differs from the policy
    theta = THETA.clone().requires_grad_(True)
    log_pi = torch.log_softmax(theta, 0)
    pi = log_pi.exp().detach()
    parts = jbond_parts(pi, log_pi.detach(), anchor)
    weights, best, samples, crude = jbond_rows(pi, anchor)
    out = jbond_loss(log_pi[best], log_pi[samples], anchor.log()[samples], crude, beta=beta, kl_weight=gamma)
    expected = (1 - beta) * parts["forward"] + beta * parts["backward"] + gamma * parts["regularizer"]
    assert torch.allclose(weighted_gradient(out.losses, weights, theta), expected, atol=1e-12, rtol=0)
    assert expected.abs().max() > 1e-3  # a non-trivial gradient, so a dropped term cannot pass


def test_jbond_backward_return_keeps_the_anchor_log_ratio():
    """The paper's backward gradient differs from r_J-only REINFORCE exactly by the KL-to-anchor gradient,
    and the explicit gamma regulariser comes on top (beta KL + gamma KL in total)."""
    anchor = torch.tensor([0.3, 0.2, 0.25, 0.25], dtype=torch.float64)
    theta = THETA.clone().requires_grad_(True)
    log_pi = torch.log_softmax(theta, 0)
    pi = log_pi.exp().detach()
    parts = jbond_parts(pi, log_pi.detach(), anchor)
    assert torch.allclose(parts["backward"] - parts["backward_variant"], parts["regularizer"], atol=1e-15)
    assert parts["regularizer"].abs().max() > 1e-2
    weights, best, samples, crude = jbond_rows(pi, anchor)
    variant = jbond_loss(log_pi[best], log_pi[samples], anchor.log()[samples], crude, beta=1.0, kl_weight=0.0, backward_kl=False)
    assert torch.allclose(weighted_gradient(variant.losses, weights, theta), parts["backward_variant"], atol=1e-12, rtol=0)
    both = jbond_loss(log_pi[best], log_pi[samples], anchor.log()[samples], crude, beta=0.5, kl_weight=0.1)
    expected = 0.5 * parts["forward"] + 0.5 * parts["backward_variant"] + (0.5 + 0.1) * parts["regularizer"]
    assert torch.allclose(weighted_gradient(both.losses, weights, theta), expected, atol=1e-12, rtol=0)


def test_jbond_gradient_vanishes_nowhere_it_should_not():
    """At policy == anchor the KL parts have zero gradient, but the crude reward still pushes:
    the update equals (1 - beta) forward + beta grad E[-r_J] alone."""
    anchor = torch.softmax(THETA, 0)
    theta = THETA.clone().requires_grad_(True)
    log_pi = torch.log_softmax(theta, 0)
    pi = log_pi.exp().detach()
    parts = jbond_parts(pi, log_pi.detach(), anchor)
    assert parts["regularizer"].abs().max() < 1e-15
    weights, best, samples, crude = jbond_rows(pi, anchor)
    out = jbond_loss(log_pi[best], log_pi[samples], anchor.log()[samples], crude, beta=0.5, kl_weight=0.3)
    expected = 0.5 * parts["forward"] + 0.5 * parts["backward_variant"]
    assert torch.allclose(weighted_gradient(out.losses, weights, theta), expected, atol=1e-12, rtol=0)
