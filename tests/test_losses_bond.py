"""BOND / J-BOND math (arXiv 2407.14622) checked against exact enumeration and known distributions."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from lit_align.losses.bond import (
    analytic_bon_kl,
    bon_log_ratio,
    bond_loss,
    expected_best_of_n,
    jbond_loss,
    jbond_reward,
    leave_one_out_baseline,
    quantile_estimate,
    reinforce,
)


def exact_best_of_n(probs: torch.Tensor, rewards: torch.Tensor, n: int) -> torch.Tensor:
    """pi_BoN by enumerating all K^n draws and keeping the highest-reward one (rewards distinct)."""
    bon = torch.zeros_like(probs, dtype=torch.float64)
    for draw in itertools.product(range(len(probs)), repeat=n):
        winner = max(draw, key=lambda i: rewards[i].item())
        bon[winner] += math.prod(probs[i].item() for i in draw)
    return bon


# ----- quantile estimator ----------------------------------------------------------------------


def test_quantile_estimate_matches_normal_cdf():
    generator = torch.Generator().manual_seed(0)
    reference = torch.randn(1, 200_000, generator=generator)
    points = torch.tensor([[-1.5, -0.5, 0.0, 0.7, 2.0]])
    expected = 0.5 * (1 + torch.erf(points / math.sqrt(2)))
    assert torch.allclose(quantile_estimate(points, reference), expected, atol=4e-3)


def test_quantile_estimate_ties_and_strictness():
    reference = torch.tensor([[0.0, 0.0, 1.0, 2.0]])
    rewards = torch.tensor([[0.0, 1.0, -1.0, 3.0]])
    assert quantile_estimate(rewards, reference).tolist() == [[0.5, 0.75, 0.0, 1.0]]
    assert quantile_estimate(rewards, reference, strict=True).tolist() == [[0.0, 0.5, 0.0, 1.0]]
    # Laplace prior: (count + 1) / (m + 2); never 0 or 1, so log p stays finite.
    assert quantile_estimate(rewards, reference, prior=1.0)[0].tolist() == pytest.approx([0.5, 4 / 6, 1 / 6, 5 / 6])


def test_quantile_of_reference_samples_is_uniform():
    # Probability integral transform: y ~ pi_ref gives p_le(y) ~ U(0, 1), mean 1/2, variance 1/12.
    generator = torch.Generator().manual_seed(1)
    reference = torch.rand(1, 20_000, generator=generator) ** 3  # any continuous distribution
    samples = torch.rand(1, 4_000, generator=generator) ** 3
    q = quantile_estimate(samples, reference)
    assert q.mean().item() == pytest.approx(0.5, abs=0.01)
    assert q.var().item() == pytest.approx(1 / 12, abs=0.005)


# ----- Best-of-N likelihood (Theorem 1) --------------------------------------------------------


@pytest.mark.parametrize("n", [2, 3, 4])
def test_exact_bon_formula_matches_enumeration(n):
    probs = torch.tensor([0.1, 0.4, 0.2, 0.3], dtype=torch.float64)
    rewards = torch.tensor([0.3, -1.0, 2.0, 0.5])
    order = rewards.argsort()
    cdf = torch.zeros_like(probs)
    cdf[order] = probs[order].cumsum(0)
    p_le, p_lt = cdf, cdf - probs
    predicted = probs.log() + bon_log_ratio(p_le, n, p_lt)
    assert torch.allclose(predicted.exp(), exact_best_of_n(probs, rewards, n), atol=1e-12)


def test_monte_carlo_bon_estimate_matches_enumeration():
    """log pi_ref(y) + log of Theorem 1 with p_le, p_lt from reference SAMPLES ~ the enumerated pi_BoN."""
    n = 3
    probs = torch.tensor([0.1, 0.4, 0.2, 0.3], dtype=torch.float64)
    rewards = torch.tensor([0.3, -1.0, 2.0, 0.5])
    draws = torch.multinomial(probs, 100_000, replacement=True, generator=torch.Generator().manual_seed(0))
    reference_rewards = rewards[draws].unsqueeze(0)
    p_le = quantile_estimate(rewards.unsqueeze(0), reference_rewards)[0].double()
    p_lt = quantile_estimate(rewards.unsqueeze(0), reference_rewards, strict=True)[0].double()
    estimate = (probs.log() + bon_log_ratio(p_le, n, p_lt)).exp()
    assert torch.allclose(estimate, exact_best_of_n(probs, rewards, n), atol=6e-3)


def test_no_ties_approximation_holds_for_a_large_output_space():
    # Many small-probability outcomes (like LLM sequences): log N + (N-1) log p_le is accurate.
    n, k = 4, 2000
    probs = torch.full((k,), 1.0 / k, dtype=torch.float64)
    p_le = torch.arange(1, k + 1, dtype=torch.float64) / k  # reward increasing with the index
    exact = p_le**n - (p_le - probs) ** n
    approx = (probs.log() + bon_log_ratio(p_le, n)).exp()
    assert torch.allclose(approx[k // 10 :], exact[k // 10 :], rtol=1e-2)
    assert (approx - exact).abs().sum().item() < 0.01  # total variation under 0.5%


def test_analytic_bon_kl_equals_kl_of_enumerated_best_of_n():
    # Continuous limit: many equal-probability outcomes with distinct rewards.
    n, k = 4, 4000
    p_le = torch.arange(1, k + 1, dtype=torch.float64) / k
    bon = p_le**n - (p_le - 1.0 / k) ** n
    kl = (bon * (bon * k).log()).sum().item()
    assert kl == pytest.approx(analytic_bon_kl(n), abs=2e-3)
    assert analytic_bon_kl(1) == 0.0
    assert analytic_bon_kl(4) == pytest.approx(math.log(4) - 0.75)


def test_expected_best_of_n_is_the_mean_over_all_subsets():
    rewards = torch.tensor([[0.3, -1.0, 2.0, 0.5, 0.1]])
    for n in (1, 2, 3, 5):
        subsets = [max(rewards[0, list(s)].tolist()) for s in itertools.combinations(range(5), n)]
        assert expected_best_of_n(rewards, n).item() == pytest.approx(sum(subsets) / len(subsets))
    with pytest.raises(ValueError, match="at least n=6"):
        expected_best_of_n(rewards, 6)


# ----- the Jeffreys loss -----------------------------------------------------------------------


def _inputs(seed=0, b=3, k=4):
    generator = torch.Generator().manual_seed(seed)
    best = torch.randn(b, generator=generator, requires_grad=True)
    samples = torch.randn(b, k, generator=generator, requires_grad=True)
    reference = torch.randn(b, k, generator=generator)
    log_ratio = bon_log_ratio(torch.rand(b, k, generator=generator).clamp(min=0.05), 4)
    return best, samples, reference, log_ratio


def test_beta_zero_is_the_forward_part_and_beta_one_the_backward_part():
    best, samples, reference, log_ratio = _inputs()
    forward = bond_loss(best, samples, reference, log_ratio, beta=0.0)
    backward = bond_loss(best, samples, reference, log_ratio, beta=1.0)
    assert torch.allclose(forward.losses, forward.forward_losses)
    assert torch.allclose(forward.losses, -best)
    assert torch.allclose(backward.losses, backward.backward_losses)
    # Backward value: the MC estimate of KL(pi || pi_BoN) = mean of log pi - log pi_ref - log_bon_ratio.
    assert torch.allclose(backward.losses, (samples - reference - log_ratio).mean(-1))
    # Gradients: beta = 0 touches only the Best-of-N samples, beta = 1 only the policy samples.
    g_best, g_samples = torch.autograd.grad(forward.losses.sum(), [best, samples], allow_unused=True)
    assert torch.allclose(g_best, -torch.ones(3)) and (g_samples is None or not g_samples.any())
    g_best, g_samples = torch.autograd.grad(backward.losses.sum(), [best, samples], allow_unused=True)
    assert (g_best is None or not g_best.any()) and g_samples.abs().sum() > 0
    # Mixing is linear.
    half = bond_loss(best, samples, reference, log_ratio, beta=0.25)
    assert torch.allclose(half.losses, 0.75 * forward.losses + 0.25 * backward.losses)


def test_reinforce_surrogate_is_zero_valued_with_leave_one_out_advantages():
    logps = torch.tensor([[-1.0, -2.0, -3.0]], requires_grad=True)
    rewards = torch.tensor([[1.0, 2.0, 6.0]])
    surrogate = reinforce(logps, rewards)
    assert surrogate.abs().sum() == 0
    (grad,) = torch.autograd.grad(surrogate.sum(), logps)
    # advantage_i = r_i - mean of the others: [1 - 4, 2 - 3.5, 6 - 1.5]; gradient = -advantage.
    assert torch.allclose(grad, torch.tensor([[3.0, 1.5, -4.5]]))
    assert torch.allclose(leave_one_out_baseline(torch.tensor([[1.0], [3.0]])), torch.tensor([[3.0], [1.0]]))


def test_backward_gradient_matches_exact_kl_gradient_on_a_categorical():
    """E[grad of the backward surrogate] = grad_theta KL(softmax(theta) || pi_BoN) (exact enumeration)."""
    torch.manual_seed(0)
    n = 3
    reference = torch.tensor([0.1, 0.4, 0.2, 0.3], dtype=torch.float64)
    rewards = torch.tensor([0.3, -1.0, 2.0, 0.5])
    cdf = torch.zeros_like(reference)
    order = rewards.argsort()
    cdf[order] = reference[order].cumsum(0)
    log_bon_ratio = bon_log_ratio(cdf, n, cdf - reference)  # exact, per category
    theta = torch.tensor([0.2, -0.3, 0.5, 0.0], dtype=torch.float64, requires_grad=True)

    log_pi = torch.log_softmax(theta, 0)
    exact_kl = (log_pi.exp() * (log_pi - reference.log() - log_bon_ratio)).sum()
    (exact_grad,) = torch.autograd.grad(exact_kl, theta)

    # 20000 prompts x 4 policy samples: REINFORCE with leave-one-out baselines.
    draws = torch.multinomial(log_pi.exp().detach(), 4 * 20_000, replacement=True).view(20_000, 4)
    log_pi = torch.log_softmax(theta, 0)
    out = bond_loss(torch.zeros(20_000, dtype=torch.float64), log_pi[draws], reference.log()[draws], log_bon_ratio[draws], beta=1.0)
    (mc_grad,) = torch.autograd.grad(out.losses.mean(), theta)
    assert torch.allclose(mc_grad, exact_grad, atol=0.02), (mc_grad, exact_grad)
    assert out.losses.mean().item() == pytest.approx(exact_kl.item(), abs=0.02)


def test_backward_kl_is_zero_when_the_policy_is_best_of_n():
    n = 4
    reference = torch.tensor([0.1, 0.4, 0.2, 0.3], dtype=torch.float64)
    rewards = torch.tensor([0.3, -1.0, 2.0, 0.5])
    cdf = torch.zeros_like(reference)
    order = rewards.argsort()
    cdf[order] = reference[order].cumsum(0)
    bon = exact_best_of_n(reference, rewards, n)
    out = bond_loss(torch.zeros(1), bon.log().view(1, 4), reference.log().view(1, 4), bon_log_ratio(cdf, n, cdf - reference).view(1, 4), beta=1.0)
    # Weighted by pi = pi_BoN over all outcomes the divergence estimate is exactly 0.
    per_outcome = bon.log() - reference.log() - bon_log_ratio(cdf, n, cdf - reference)
    assert torch.allclose(per_outcome, torch.zeros(4, dtype=torch.float64), atol=1e-12)
    assert out.losses.abs().item() < 1e-9


# ----- J-BOND ----------------------------------------------------------------------------------


def test_jbond_reward_penalises_only_losing_to_both_anchor_samples():
    anchors = torch.tensor([[0.2, 0.5], [0.2, 0.5], [0.2, 0.5], [0.2, 0.5]])
    samples = torch.tensor([[0.1], [0.2], [0.3], [0.9]])
    reward = jbond_reward(samples, anchors)
    assert reward.squeeze(-1).tolist() == pytest.approx([-math.log(16), 0.0, 0.0, 0.0])
    # The crude reward is exactly -penalty where the plain MC quantile is 0.
    assert torch.equal(reward < 0, quantile_estimate(samples, anchors) == 0)


def test_jbond_loss_mixes_forward_backward_and_regulariser():
    best, samples, anchor, _ = _inputs(seed=3, k=2)
    crude = jbond_reward(torch.tensor([[0.0, 1.0], [2.0, -1.0], [0.5, 0.5]]), torch.tensor([[0.2, 0.3], [0.0, 1.0], [0.6, 0.7]]))
    out = jbond_loss(best, samples, anchor, crude, beta=0.5, kl_weight=0.1)
    assert torch.allclose(out.forward_losses, -best.detach())
    # Paper form (Alg. 2): the backward value is E[rho - r_J], the KL to Best-of-2 of the anchor up to log 2.
    assert torch.allclose(out.backward_losses, ((samples - anchor).detach() - crude).mean(-1))
    variant = jbond_loss(best, samples, anchor, crude, beta=0.5, kl_weight=0.1, backward_kl=False)
    assert torch.allclose(variant.backward_losses, -crude.mean(-1))
    assert torch.allclose(out.regularizer_losses, (samples - anchor).detach().mean(-1))
    assert torch.allclose(out.losses, 0.5 * out.forward_losses + 0.5 * out.backward_losses + 0.1 * out.regularizer_losses)
    # The worse of two samples of a prompt gets pushed down by the crude reward, the other up.
    (grad,) = torch.autograd.grad(jbond_loss(best, samples, anchor, crude, beta=1.0, kl_weight=0.0, backward_kl=False).losses.sum(), samples)
    assert grad[0, 0] > 0 > grad[0, 1]


def test_empirical_bon_kl_with_and_without_ties():
    from lit_align.losses.bond import empirical_bon_kl

    continuous = torch.rand(1, 4000, generator=torch.Generator().manual_seed(0))
    for n in (2, 4, 8):
        assert empirical_bon_kl(continuous, n).item() == pytest.approx(analytic_bon_kl(n), abs=1e-3)
    # Two reward levels of probability 1/2: Best-of-2 picks the high level with 3/4.
    assert empirical_bon_kl(torch.tensor([[0.0, 0.0, 1.0, 1.0]]), 2).item() == pytest.approx(0.25 * math.log(0.5) + 0.75 * math.log(1.5))
    assert empirical_bon_kl(torch.zeros(1, 16), 4).item() == pytest.approx(0.0)  # all tied: no choice, no KL
