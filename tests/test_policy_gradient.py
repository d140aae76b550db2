"""Gradients of the RLOO / GRPO / PPO surrogates pinned by exact enumeration (issue 21, section 3).

A policy-gradient surrogate often has value 0, so a wrong sign or a wrong baseline passes a value
test. Here the policy is softmax(theta) over K one-token "sequences"; every k-tuple of samples is
enumerated and weighted by its probability, so the EXPECTED gradient of each surrogate is computed
exactly (float64) and compared with its closed form. For softmax logits, with g not depending on theta:

    grad log pi(y) = e_y - pi,     grad E_pi[g] = pi * (g - E_pi[g]).
"""

from __future__ import annotations

import itertools
import statistics

import pytest
import torch

from lit_align.losses.policy_gradient import (
    aggregate,
    clipped_surrogate,
    clipped_value_loss,
    generalized_advantage_estimation,
    group_normalized_advantages,
    kl_penalized_token_rewards,
    leave_one_out_advantages,
    whiten,
)
from lit_align.losses.kl import kl_k1, kl_k3
from lit_align.online.estimators import ADVANTAGE_ESTIMATORS, POLICY_LOSSES, AdvantageInputs, PolicyLossSettings

K = 4
THETA = torch.tensor([0.2, -0.3, 0.5, 0.1], dtype=torch.float64)
REWARDS = torch.tensor([0.3, -1.0, 0.7, 2.0], dtype=torch.float64)
REFERENCE = torch.tensor([0.1, 0.4, 0.2, 0.3], dtype=torch.float64)


def score_gradient(pi: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    return pi * (g - (pi * g).sum())


def tuples(pi: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Every k-tuple of samples [N, k] and its probability [N]."""
    rows = torch.tensor(list(itertools.product(range(len(pi)), repeat=k)))
    return rows, pi[rows].prod(-1)


def expected_gradient(per_tuple_loss: torch.Tensor, weights: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    (grad,) = torch.autograd.grad((weights * per_tuple_loss).sum(), theta)
    return grad


def policy():
    theta = THETA.clone().requires_grad_(True)
    log_pi = torch.log_softmax(theta, 0)
    return theta, log_pi, log_pi.exp().detach()


def registered_loss(estimator: str, loss: str, log_pi: torch.Tensor, rows: torch.Tensor, token_rewards: torch.Tensor, settings: PolicyLossSettings) -> torch.Tensor:
    """Per-tuple loss through the registries: each tuple is one prompt with k one-token completions."""
    n, k = rows.shape
    logps = log_pi[rows].reshape(n * k, 1)
    mask = torch.ones_like(logps)
    advantages = ADVANTAGE_ESTIMATORS[estimator](AdvantageInputs(token_rewards.reshape(n * k, 1), mask, k)).advantages
    losses = []
    for i in range(n):  # one loss per tuple: the registered losses reduce their whole batch
        part = slice(i * k, (i + 1) * k)
        losses.append(POLICY_LOSSES[loss](logps[part], logps[part].detach(), advantages[part], mask[part], settings).loss)
    return torch.stack(losses)


@pytest.mark.parametrize("k", [2, 3])
def test_rloo_expected_gradient_is_the_policy_gradient(k):
    """Leave-one-out REINFORCE is unbiased: E[grad L] = -grad E_pi[r] exactly (a baseline that
    includes the sample itself gives (k-1)/k of it)."""
    theta, log_pi, pi = policy()
    rows, weights = tuples(pi, k)
    advantages = leave_one_out_advantages(REWARDS[rows])
    loss = clipped_surrogate(log_pi[rows], log_pi[rows].detach(), advantages, clip_low=None).losses.mean(-1)
    assert torch.allclose(expected_gradient(loss, weights, theta), -score_gradient(pi, REWARDS), atol=1e-12, rtol=0)
    # The same through the registries (rloo estimator, sequence-level loss), clipped or not: on-policy the clip never binds.
    for clip in (None, 0.2):
        theta, log_pi, pi = policy()
        loss = registered_loss("rloo", "sequence_clip", log_pi, rows, REWARDS[rows], PolicyLossSettings(clip_low=clip))
        assert torch.allclose(expected_gradient(loss, weights, theta), -score_gradient(pi, REWARDS), atol=1e-12, rtol=0)


def reference_group_advantages(rewards: list[float], scale_by_std: bool) -> list[float]:
    mean = statistics.mean(rewards)
    std = statistics.stdev(rewards) + 1e-4 if scale_by_std else 1.0
    return [(r - mean) / std for r in rewards]


@pytest.mark.parametrize("estimator", ["grpo", "dr_grpo"])
@pytest.mark.parametrize("aggregation", ["seq_mean", "token_mean"])
def test_grpo_gradient_matches_the_closed_form_per_group(estimator, aggregation):
    """Each tuple is one prompt's group; grad L = -(1/k) sum_i A_i (e_{y_i} - pi) with A from the group's
    own mean and std (statistics.stdev: Bessel). Dr. GRPO (no std) is (k-1)/k of the policy gradient."""
    k = 3
    theta, log_pi, pi = policy()
    rows, weights = tuples(pi, k)
    loss = registered_loss(estimator, "token_clip", log_pi, rows, REWARDS[rows], PolicyLossSettings(aggregation=aggregation))
    expected = torch.zeros(K, dtype=torch.float64)
    for row, weight in zip(rows.tolist(), weights):
        for y, a in zip(row, reference_group_advantages(REWARDS[row].tolist(), estimator == "grpo")):
            expected += weight * -a / k * (torch.nn.functional.one_hot(torch.tensor(y), K).double() - pi)
    assert torch.allclose(expected_gradient(loss, weights, theta), expected, atol=1e-10, rtol=0)
    if estimator == "dr_grpo":
        assert torch.allclose(expected, -(k - 1) / k * score_gradient(pi, REWARDS), atol=1e-12, rtol=0)


def test_group_statistics_are_per_prompt():
    rewards = torch.tensor([[1.0, 2.0, 3.0], [10.0, 10.0, 40.0]])
    assert torch.allclose(group_normalized_advantages(rewards), torch.tensor([[-1.0, 0.0, 1.0], [-0.57735, -0.57735, 1.1547]]), atol=1e-4)
    assert torch.equal(group_normalized_advantages(rewards, scale_by_std=False), torch.tensor([[-1.0, 0.0, 1.0], [-10.0, -10.0, 20.0]]))
    assert torch.allclose(leave_one_out_advantages(rewards), torch.tensor([[-1.5, 0.0, 1.5], [-15.0, -15.0, 30.0]]))


# ----- PPO's clip region ----------------------------------------------------------------------------
OLD_THETA = torch.zeros(5, dtype=torch.float64)
DELTA = torch.tensor([0.6, -0.6, -0.6, 0.6, 0.0], dtype=torch.float64)
# ratios pi/pi_old = [1.59, 0.48, 0.48, 1.59, 0.87]
CLIP_ADVANTAGES = torch.tensor([1.0, -1.0, 1.0, -1.0, 0.7], dtype=torch.float64)


@pytest.mark.parametrize("loss_name", ["token_clip", "sequence_clip"])
def test_ppo_clip_zeroes_the_gradient_exactly_outside_the_range(loss_name):
    """Per sample: zero gradient where rho > 1+eps with A > 0 and where rho < 1-eps with A < 0; elsewhere
    -A rho (e_y - pi), including rho < 1-eps with A > 0 and rho > 1+eps with A < 0 (the pessimistic bound)."""
    old_log_pi = torch.log_softmax(OLD_THETA, 0)
    settings = PolicyLossSettings(clip_low=0.2)
    expected_zero = [True, True, False, False, False]
    for y in range(5):
        theta = (OLD_THETA + DELTA).requires_grad_(True)
        log_pi = torch.log_softmax(theta, 0)
        pi, ratio = log_pi.exp().detach(), (log_pi - old_log_pi).exp().detach()
        out = POLICY_LOSSES[loss_name](log_pi[y].view(1, 1), old_log_pi[y].view(1, 1), CLIP_ADVANTAGES[y].view(1, 1), torch.ones(1, 1), settings)
        (grad,) = torch.autograd.grad(out.loss, theta)
        if expected_zero[y]:
            assert torch.count_nonzero(grad) == 0 and out.clip_fraction.item() == 1.0
        else:
            closed = -CLIP_ADVANTAGES[y] * ratio[y] * (torch.nn.functional.one_hot(torch.tensor(y), 5).double() - pi)
            assert torch.allclose(grad, closed, atol=1e-12, rtol=0) and out.clip_fraction.item() == 0.0


def test_unclipped_surrogate_is_importance_sampled_policy_gradient():
    """Samples from pi_old, no clipping: E_old[grad -rho A] = -grad E_pi[A]; with the clip, only the
    unclipped outcomes contribute."""
    theta = (OLD_THETA + DELTA).requires_grad_(True)
    log_pi, old_log_pi = torch.log_softmax(theta, 0), torch.log_softmax(OLD_THETA, 0)
    pi, old_pi = log_pi.exp().detach(), old_log_pi.exp()
    unclipped = clipped_surrogate(log_pi, old_log_pi, CLIP_ADVANTAGES, clip_low=None).losses
    assert torch.allclose(expected_gradient(unclipped, old_pi, theta), -score_gradient(pi, CLIP_ADVANTAGES), atol=1e-12, rtol=0)
    theta = (OLD_THETA + DELTA).requires_grad_(True)
    log_pi = torch.log_softmax(theta, 0)
    out = clipped_surrogate(log_pi, old_log_pi, CLIP_ADVANTAGES, clip_low=0.2)
    keep = (~out.clipped).double()
    ratio = (log_pi - old_log_pi).exp().detach()
    closed = -((old_pi * keep * CLIP_ADVANTAGES * ratio).unsqueeze(1) * (torch.eye(5, dtype=torch.float64) - pi)).sum(0)
    assert torch.allclose(expected_gradient(out.losses, old_pi, theta), closed, atol=1e-12, rtol=0)
    assert out.clipped.tolist() == [True, True, False, False, False]


def test_advantages_and_old_logps_are_constants_of_the_surrogate():
    """Advantages that depend on theta (e.g. a KL-penalised reward) still give grad = -A grad log pi."""
    theta, log_pi, pi = policy()
    advantages = REWARDS - log_pi  # carries a gradient unless the surrogate detaches it
    out = clipped_surrogate(log_pi, log_pi, advantages, clip_low=0.2)
    expected = -((advantages.detach()).unsqueeze(1) * (torch.eye(K, dtype=torch.float64) - pi)).sum(0)
    (grad,) = torch.autograd.grad(out.losses.sum(), theta)
    assert torch.allclose(grad, expected, atol=1e-12, rtol=0)
    # The estimators hand back constants too.
    rewards = (REWARDS - log_pi).view(2, 2)
    for estimator in ("rloo", "grpo", "dr_grpo"):
        out = ADVANTAGE_ESTIMATORS[estimator](AdvantageInputs(rewards.reshape(4, 1), torch.ones(4, 1), 2))
        assert not out.advantages.requires_grad
    assert not kl_penalized_token_rewards(REWARDS, log_pi.view(4, 1), torch.ones(4, 1), 0.1).requires_grad


# ----- KL estimators ------------------------------------------------------------------------------
def test_kl_estimators_values_and_expected_gradients():
    """k1 = log pi - log pi_ref; k3 = (r - 1) - log r with r = pi_ref/pi. Both are unbiased for
    KL(pi || pi_ref) on samples of pi. As a reward penalty (REINFORCE, leave-one-out), -beta k1 gives
    -beta grad KL(pi || pi_ref); as a loss term, beta k3 gives beta grad KL(pi_ref || pi) = beta (pi - pi_ref)."""
    theta, log_pi, pi = policy()
    log_ref = REFERENCE.log()
    assert torch.allclose(kl_k1(log_pi, log_ref), log_pi - log_ref)
    r = REFERENCE / pi
    assert torch.allclose(kl_k3(log_pi.detach(), log_ref), r - 1 - r.log())
    reverse_kl = (pi * (log_pi.detach() - log_ref)).sum()
    assert (pi * kl_k1(log_pi.detach(), log_ref)).sum().item() == pytest.approx(reverse_kl.item(), abs=1e-12)
    assert (pi * kl_k3(log_pi.detach(), log_ref)).sum().item() == pytest.approx(reverse_kl.item(), abs=1e-12)
    assert (kl_k3(log_pi.detach(), log_ref) >= 0).all()

    beta, k = 0.3, 2
    rows, weights = tuples(pi, k)
    k3_loss = beta * kl_k3(log_pi[rows], log_ref[rows]).mean(-1)
    assert torch.allclose(expected_gradient(k3_loss, weights, theta), beta * (pi - REFERENCE), atol=1e-12, rtol=0)

    theta, log_pi, pi = policy()
    token_rewards = kl_penalized_token_rewards(REWARDS[rows].reshape(-1), kl_k1(log_pi[rows], log_ref[rows]).reshape(-1, 1), torch.ones(rows.numel(), 1), beta)
    loss = registered_loss("rloo", "sequence_clip", log_pi, rows, token_rewards, PolicyLossSettings(clip_low=None))
    reverse_kl_grad = score_gradient(pi, log_pi.detach() - log_ref)
    assert torch.allclose(expected_gradient(loss, weights, theta), -score_gradient(pi, REWARDS) + beta * reverse_kl_grad, atol=1e-12, rtol=0)


def test_kl_penalized_token_rewards_put_the_score_on_the_last_completion_token():
    mask = torch.tensor([[0, 1, 1, 0], [0, 0, 1, 1]])
    kl = torch.tensor([[9.0, 0.5, 1.0, 9.0], [9.0, 9.0, -1.0, 2.0]])
    out = kl_penalized_token_rewards(torch.tensor([3.0, -2.0]), kl, mask, beta=0.1)
    assert torch.allclose(out, torch.tensor([[0.0, -0.05, 2.9, 0.0], [0.0, 0.0, 0.1, -2.2]]))


# ----- GAE, whitening, value loss, aggregation -------------------------------------------------------
@pytest.mark.parametrize(
    "gamma, lam, advantages",
    [
        (1.0, 0.95, [0.0, 0.52675, 0.765, 0.7, 0.0]),  # worked by hand, see below
        (0.9, 0.8, [0.0, 0.17328, 0.574, 0.7, 0.0]),
        (1.0, 1.0, [0.0, 0.6, 0.8, 0.7, 0.0]),  # Monte-Carlo return minus V
        (1.0, 0.0, [0.0, -0.2, 0.1, 0.7, 0.0]),  # one-step TD errors
    ],
)
def test_gae_hand_worked(gamma, lam, advantages):
    """Row: prompt token, 3 completion tokens, padding. gamma=1, lambda=0.95:
    delta_3 = 1.0 + 0 - 0.3 = 0.7; delta_2 = 0.2 + 0.3 - 0.4 = 0.1; delta_1 = -0.1 + 0.4 - 0.5 = -0.2;
    A_3 = 0.7; A_2 = 0.1 + 0.95 * 0.7 = 0.765; A_1 = -0.2 + 0.95 * 0.765 = 0.52675. Masked values (9) never enter."""
    mask = torch.tensor([[0, 1, 1, 1, 0]])
    rewards = torch.tensor([[5.0, -0.1, 0.2, 1.0, 5.0]])
    values = torch.tensor([[9.0, 0.5, 0.4, 0.3, 9.0]], requires_grad=True)
    adv, returns = generalized_advantage_estimation(rewards, values, mask, gamma, lam)
    assert torch.allclose(adv, torch.tensor([advantages]), atol=1e-6)
    assert torch.allclose(returns, (torch.tensor([advantages]) + values.detach()) * mask, atol=1e-6)
    assert not adv.requires_grad and not returns.requires_grad


def test_whiten_over_masked_tokens():
    values = torch.tensor([[1.0, 2.0, 100.0], [3.0, 4.0, -50.0]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 0]])
    out = whiten(values, mask)
    expected = (torch.tensor([1.0, 2.0, 3.0, 4.0]) - 2.5) / torch.tensor([1.0, 2.0, 3.0, 4.0]).std()
    assert torch.allclose(out[mask.bool()], expected, atol=1e-6) and torch.equal(out[~mask.bool()], torch.zeros(2))


def test_clipped_value_loss_gradient():
    """V_old = 0, V = 1, R = 2, eps = 0.2: the clipped term (0.2 - 2)^2 = 3.24 beats (1 - 2)^2 = 1, so the
    loss is 1.62 with ZERO gradient; unclipped it would be 0.5 with gradient -1. With V = 0.1 inside the range: V - R."""
    returns, old = torch.tensor([2.0, 2.0]), torch.tensor([0.0, 0.0])
    values = torch.tensor([1.0, 0.1], requires_grad=True)
    losses, clipped = clipped_value_loss(values, old, returns, clip=0.2)
    (grad,) = torch.autograd.grad(losses.sum(), values)
    assert torch.allclose(losses.detach(), torch.tensor([1.62, 0.5 * 1.9**2])) and clipped.tolist() == [True, False]
    assert torch.allclose(grad, torch.tensor([0.0, 0.1 - 2.0]))
    losses, _ = clipped_value_loss(values, old, returns, clip=None)
    (grad,) = torch.autograd.grad(losses.sum(), values)
    assert torch.allclose(grad, torch.tensor([-1.0, -1.9]))



def test_value_clip_fraction_ignores_rounding_inside_the_range():
    """Inside the clip range both terms are one number up to the rounding of V_old + (V - V_old). In
    float32 at these values the "clipped" square comes out larger, yet nothing was clipped (a
    fraction that counted it flipped between CPU kernels in the PPO golden)."""
    values, old, returns = torch.tensor([0.016453921794891357]), torch.tensor([-0.026110166683793068]), torch.tensor([1.1885504722595215])
    assert (old + torch.clamp(values - old, -0.5, 0.5) - returns) ** 2 > (values - returns) ** 2  # the rounding is there
    _, clipped = clipped_value_loss(values, old, returns, clip=0.5)
    assert clipped.tolist() == [False]


@pytest.mark.parametrize(
    "mode, weights",
    [
        ("seq_mean", [[0.0, 0.25, 0.25], [1 / 6, 1 / 6, 1 / 6]]),  # 1/R * 1/|o_i|
        ("token_mean", [[0.0, 0.2, 0.2], [0.2, 0.2, 0.2]]),  # 1 / sum |o_i|
        ("constant", [[0.0, 0.125, 0.125], [0.125, 0.125, 0.125]]),  # 1 / (R * C), C = 4
    ],
)
def test_aggregation_token_weights(mode, weights):
    losses = torch.tensor([[7.0, 1.0, 2.0], [3.0, 4.0, 5.0]], requires_grad=True)
    mask = torch.tensor([[0, 1, 1], [1, 1, 1]])
    (grad,) = torch.autograd.grad(aggregate(losses, mask, mode, constant=4.0), losses)
    assert torch.allclose(grad, torch.tensor(weights))
