"""lit_align.losses.kl: the k1/k2/k3 estimators of KL(pi || pi_ref) (Schulman 2020) on exact distributions."""

from __future__ import annotations

import pytest
import torch

from lit_align.losses.kl import kl_estimate, kl_k1, kl_k2, kl_k3


def test_k1_and_k3_are_unbiased_and_k3_is_nonnegative():
    pi = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
    ref = torch.tensor([0.2, 0.5, 0.3], dtype=torch.float64)
    exact = (pi * (pi.log() - ref.log())).sum()
    # Expectations under y ~ pi, by enumeration.
    assert (pi * kl_k1(pi.log(), ref.log())).sum().item() == pytest.approx(exact.item())
    assert (pi * kl_k3(pi.log(), ref.log())).sum().item() == pytest.approx(exact.item())
    assert bool((kl_k3(pi.log(), ref.log()) >= 0).all()) and bool((kl_k1(pi.log(), ref.log()) < 0).any())
    assert kl_k2(pi.log(), ref.log()).tolist() == pytest.approx((0.5 * (pi.log() - ref.log()) ** 2).tolist())


def test_named_estimator_and_unknown_name():
    a, b = torch.tensor([-1.0, -2.0]), torch.tensor([-1.5, -1.0])
    assert torch.equal(kl_estimate(a, b, "k3"), kl_k3(a, b)) and torch.equal(kl_estimate(a, b), a - b)
    with pytest.raises(ValueError, match="unknown KL estimator 'k4'"):
        kl_estimate(a, b, "k4")
