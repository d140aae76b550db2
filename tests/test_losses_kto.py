"""KTO loss (arXiv 2402.01306) checked against the paper's equations."""

from __future__ import annotations

import math
import pytest
import torch

from lit_align.losses import check_weight_ratio, kto_loss, kto_reference_point


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def closed_form(rho: list[float], labels: list[bool], z0: float, beta: float, weight_d: float = 1.0, weight_u: float = 1.0) -> list[float]:
    """lambda_D (1 - sigma(beta (rho - z0))) for desirable, lambda_U (1 - sigma(beta (z0 - rho))) for undesirable."""
    return [weight_d * (1 - sigmoid(beta * (r - z0))) if d else weight_u * (1 - sigmoid(beta * (z0 - r))) for r, d in zip(rho, labels)]


def test_policy_equals_reference_gives_half_lambda():
    logps = torch.tensor([-12.0, -7.5, -30.0, -3.0, -9.0])
    labels = torch.tensor([True, False, True, False, False])
    kl_logps = torch.tensor([-20.0, -11.0, -6.0, -14.0, -8.0])
    out = kto_loss(logps, logps.clone(), labels, kl_logps, kl_logps.clone(), beta=0.1, desirable_weight=1.5, undesirable_weight=0.8)
    # rho = 0 and z0 = 0, so v = lambda_y * sigma(0) and the loss is lambda_y / 2.
    assert out.kl.item() == 0.0
    torch.testing.assert_close(out.losses, torch.tensor([0.75, 0.4, 0.75, 0.4, 0.4]))
    torch.testing.assert_close(out.rewards, torch.zeros(5))


def test_matches_closed_form_with_positive_reference_point():
    policy = torch.tensor([-10.0, -4.0, -6.0, -20.0], dtype=torch.float64)
    reference = torch.tensor([-12.0, -5.0, -3.0, -18.0], dtype=torch.float64)
    labels = torch.tensor([True, True, False, False])
    policy_kl = torch.tensor([-9.0, -15.0, -7.0, -11.0], dtype=torch.float64)
    reference_kl = torch.tensor([-10.0, -14.0, -10.0, -12.0], dtype=torch.float64)  # log-ratios 1, -1, 3, 1 -> z0 = 1
    beta = 0.5
    out = kto_loss(policy, reference, labels, policy_kl, reference_kl, beta=beta, desirable_weight=2.0, undesirable_weight=3.0)
    assert out.kl.item() == pytest.approx(1.0)
    rho = (policy - reference).tolist()
    expected = closed_form(rho, labels.tolist(), 1.0, beta, 2.0, 3.0)
    assert out.losses.tolist() == pytest.approx(expected)
    assert out.rewards.tolist() == pytest.approx([beta * r for r in rho])


def test_reference_point_is_detached_and_clamped():
    policy = torch.tensor([-5.0, -6.0], requires_grad=True)
    reference = torch.tensor([-5.5, -6.0])
    labels = torch.tensor([True, False])
    # Mismatched pairs are less likely under the policy than the reference: the raw mean is -2.
    policy_kl = torch.tensor([-9.0, -8.0], requires_grad=True)
    reference_kl = torch.tensor([-7.0, -6.0])
    out = kto_loss(policy, reference, labels, policy_kl, reference_kl, beta=1.0)
    assert out.kl.item() == 0.0  # clamped: a KL divergence is never negative
    assert out.losses.tolist() == pytest.approx(closed_form([0.5, 0.0], [True, False], 0.0, 1.0))
    out.losses.sum().backward()
    assert policy_kl.grad is None  # no gradient through z0
    assert policy.grad is not None and policy.grad.abs().min() > 0
    # And a positive estimate is used as is, still without gradient.
    z0 = kto_reference_point(torch.tensor([-1.0, -2.0], requires_grad=True), torch.tensor([-3.0, -2.5]))
    assert z0.item() == pytest.approx(1.25) and not z0.requires_grad


def test_weights_scale_only_their_own_terms():
    policy = torch.tensor([-4.0, -6.0, -5.0, -7.0], requires_grad=True)
    reference = torch.tensor([-5.0, -5.0, -5.0, -6.0])
    labels = torch.tensor([True, False, True, False])
    kl = (torch.tensor([-3.0, -2.0]), torch.tensor([-3.5, -2.0]))
    base = kto_loss(policy, reference, labels, *kl)
    (grad_base,) = torch.autograd.grad(base.losses.sum(), policy)
    heavy_d = kto_loss(policy, reference, labels, *kl, desirable_weight=3.0)
    (grad_d,) = torch.autograd.grad(heavy_d.losses.sum(), policy)
    heavy_u = kto_loss(policy, reference, labels, *kl, undesirable_weight=0.5)
    torch.testing.assert_close(heavy_d.losses, base.losses * torch.tensor([3.0, 1.0, 3.0, 1.0]))
    torch.testing.assert_close(heavy_u.losses, base.losses * torch.tensor([1.0, 0.5, 1.0, 0.5]))
    torch.testing.assert_close(grad_d, grad_base * torch.tensor([3.0, 1.0, 3.0, 1.0]))


@pytest.mark.parametrize("label", [True, False])
def test_single_kind_batches(label):
    policy = torch.tensor([-4.0, -6.0, -5.0], requires_grad=True)
    reference = torch.tensor([-4.5, -6.0, -4.0])
    labels = torch.full((3,), label)
    out = kto_loss(policy, reference, labels, torch.tensor([-3.0, -2.0, -4.0]), torch.tensor([-3.5, -2.0, -4.0]), beta=0.1)
    z0 = 0.5 / 3
    assert out.kl.item() == pytest.approx(z0)
    assert out.losses.tolist() == pytest.approx(closed_form((policy - reference).tolist(), [label] * 3, z0, 0.1))
    out.losses.mean().backward()
    # Gradient descent raises log-probs of desirable outputs and lowers undesirable ones.
    assert bool((policy.grad < 0).all()) if label else bool((policy.grad > 0).all())


def test_batch_without_mismatched_pairs_uses_zero():
    out = kto_loss(torch.tensor([-3.0]), torch.tensor([-4.0]), torch.tensor([True]), torch.zeros(0), torch.zeros(0))
    assert out.kl.item() == 0.0
    assert out.losses.tolist() == pytest.approx(closed_form([1.0], [True], 0.0, 0.1))


def test_weight_ratio_check_follows_eq8():
    assert check_weight_ratio(1000, 1000) is None  # ratio 1
    assert check_weight_ratio(1300, 1000) is None  # 1.3 <= 4/3
    assert "no desirable" in check_weight_ratio(0, 10)
    message = check_weight_ratio(100, 1000)  # 1:10 imbalance, as in the paper's study
    assert message is not None and "0.1" in message and "[10, 13.3]" in message
    assert check_weight_ratio(100, 1000, desirable_weight=10.0) is None
    assert check_weight_ratio(100, 1000, desirable_weight=14.0) is not None
    assert check_weight_ratio(1000, 100, undesirable_weight=10.0) is None


def test_reference_point_is_averaged_across_ranks(monkeypatch):
    """Two simulated DDP ranks: all_reduce(SUM) adds the other rank's (sum, count) of log-ratios."""
    import torch.distributed as dist

    ranks = [torch.tensor([-3.0, -1.0]), torch.tensor([2.0, 6.0])]  # rank 0 alone would clamp to 0, rank 1 alone gives 4
    current = {"rank": 0}

    def all_reduce(tensor, op=None):
        other = ranks[1 - current["rank"]].double()
        tensor += torch.stack([other.sum(), torch.tensor(float(other.numel()), dtype=torch.float64)])

    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "all_reduce", all_reduce)
    for rank in (0, 1):
        current["rank"] = rank
        # The mean over all four pairs is 1, and the clamp comes after the average.
        assert kto_reference_point(ranks[rank], torch.zeros(2)).item() == pytest.approx(1.0)
    # A rank whose micro-batch had no pair still gets the others' estimate.
    current["rank"] = 0
    ranks[1] = torch.tensor([0.5, 1.5])
    assert kto_reference_point(torch.zeros(0), torch.zeros(0)).item() == pytest.approx(1.0)


def test_weight_ratio_with_a_zero_weight_says_so_instead_of_dividing_by_zero():
    message = check_weight_ratio(100, 100, desirable_weight=1.0, undesirable_weight=0.0)
    assert message is not None and "undesirable_weight = 0" in message and "only pushes one way" in message
    assert "desirable_weight = 0" in check_weight_ratio(100, 100, desirable_weight=0.0)
