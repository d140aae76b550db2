"""DPO, cDPO and IPO against facts stated in the papers."""

import math

import pytest
import torch

from lit_align.losses import dpo_loss, ipo_loss, sft_loss
from lit_align.ops import SequenceLogps


def _logps(n=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [-(torch.rand(n, generator=g) * 20 + 1) for _ in range(4)]


def test_dpo_is_log2_when_policy_equals_reference():
    pc, pr, _, _ = _logps()
    for eps in (0.0, 0.1, 0.3):
        out = dpo_loss(pc, pr, pc.clone(), pr.clone(), beta=0.1, label_smoothing=eps)
        torch.testing.assert_close(out.losses, torch.full_like(pc, math.log(2)))
        assert out.chosen_rewards.abs().max() == 0 and out.rejected_rewards.abs().max() == 0


def test_dpo_implicit_rewards_and_gradient_direction():
    pc, pr, rc, rr = _logps()
    pc, pr = pc.clone().requires_grad_(), pr.clone().requires_grad_()
    out = dpo_loss(pc, pr, rc, rr, beta=0.5)
    torch.testing.assert_close(out.chosen_rewards, 0.5 * (pc - rc).detach())
    torch.testing.assert_close(out.rejected_rewards, 0.5 * (pr - rr).detach())
    torch.testing.assert_close(out.losses, -torch.nn.functional.logsigmoid(out.chosen_rewards - out.rejected_rewards))
    out.losses.sum().backward()
    assert (pc.grad < 0).all() and (pr.grad > 0).all()  # raise chosen, lower rejected


def test_cdpo_with_zero_smoothing_equals_dpo():
    args = _logps(seed=3)
    a = dpo_loss(*args, beta=0.2)
    b = dpo_loss(*args, beta=0.2, label_smoothing=0.0)
    torch.testing.assert_close(a.losses, b.losses)


def test_cdpo_optimum_is_a_finite_margin():
    eps, beta = 0.1, 0.5
    h = torch.linspace(-10, 30, 40001, dtype=torch.float64)
    zero = torch.zeros_like(h)
    losses = dpo_loss(h, zero, zero, zero, beta=beta, label_smoothing=eps).losses
    best = h[losses.argmin()]
    assert best.item() == pytest.approx(math.log((1 - eps) / eps) / beta, abs=2e-3)
    # Plain DPO keeps decreasing: no finite optimum.
    plain = dpo_loss(h, zero, zero, zero, beta=beta).losses
    assert (plain[1:] <= plain[:-1]).all()


def test_label_smoothing_range_is_checked():
    with pytest.raises(ValueError, match="label_smoothing"):
        dpo_loss(*_logps(), label_smoothing=0.5)


def test_ipo_minimised_at_margin_one_over_two_tau():
    tau = 0.25
    h = torch.linspace(-5, 10, 15001, dtype=torch.float64)
    zero = torch.zeros_like(h)
    losses = ipo_loss(h, zero, zero, zero, tau=tau).losses
    assert h[losses.argmin()].item() == pytest.approx(1 / (2 * tau), abs=1e-3)
    assert losses.min().item() == pytest.approx(0.0, abs=1e-6)
    # Gradient vanishes at the target margin and pushes towards it from either side.
    for start, sign in ((0.0, -1), (4.0, 1)):
        x = torch.tensor([start], requires_grad=True)
        ipo_loss(x, torch.zeros(1), torch.zeros(1), torch.zeros(1), tau=tau).losses.sum().backward()
        assert math.copysign(1, x.grad.item()) == sign
    x = torch.tensor([1 / (2 * tau)], requires_grad=True)
    ipo_loss(x, torch.zeros(1), torch.zeros(1), torch.zeros(1), tau=tau).losses.sum().backward()
    assert x.grad.item() == pytest.approx(0.0, abs=1e-7)


def test_sft_loss_is_token_weighted_nll():
    logps = SequenceLogps(sum=torch.tensor([-6.0, -1.0]), count=torch.tensor([3.0, 1.0]))
    assert sft_loss(logps).item() == pytest.approx(7.0 / 4.0)


def test_pairwise_arguments_are_checked_at_construction():
    from lit_align.algorithms import DPO, IPO, ConservativeDPO
    from lit_align.errors import ConfigError

    for cls, name, value in [(DPO, "beta", 0.0), (DPO, "label_smoothing", 0.5), (DPO, "nll_weight", -1.0), (ConservativeDPO, "label_smoothing", -0.1), (IPO, "tau", -0.1)]:
        with pytest.raises(ConfigError, match=rf"{cls.__name__}: {name} must be in"):
            cls(model="embedded:micro", **{name: value})
    with pytest.raises(ConfigError, match="label_smoothing"):
        dpo_loss(*_logps(), beta=0.1, label_smoothing=0.7)


def test_ipo_logs_the_summed_implicit_reward_even_when_the_loss_uses_means():
    """rewards/* mean tau * summed log-ratio for every pairwise method; length_normalize changes the loss only."""
    from lit_align.algorithms import IPO
    from lit_align.algorithms.pairwise import PairLogps

    counts = torch.tensor([2.0, 5.0])
    sums = [torch.tensor(v) for v in ([-4.0, -10.0], [-6.0, -5.0], [-5.0, -9.0], [-5.0, -8.0])]
    logps = PairLogps(*(SequenceLogps(s, counts) for s in sums))
    normalized, _ = IPO(model="embedded:micro", tau=0.2, length_normalize=True).pair_loss(logps)
    summed, _ = IPO(model="embedded:micro", tau=0.2).pair_loss(logps)
    assert torch.allclose(normalized.chosen_rewards, 0.2 * (sums[0] - sums[2]))
    assert torch.allclose(normalized.rejected_rewards, 0.2 * (sums[1] - sums[3]))
    assert torch.equal(normalized.chosen_rewards, summed.chosen_rewards)
    # ...while the loss is the per-token-mean IPO loss.
    expected = ipo_loss(*(s / counts for s in sums), tau=0.2).losses
    assert torch.allclose(normalized.losses, expected)
    assert not torch.allclose(normalized.losses, summed.losses)
