"""Bradley–Terry reward-model loss: log 2 at equal rewards, TRL's formula, margin and centring."""

import math

import pytest
import torch
import torch.nn.functional as F

from lit_align.losses import bradley_terry_loss


def test_equal_rewards_give_log_2_whatever_their_value():
    rewards = torch.tensor([-3.0, 0.0, 0.7, 12.5])
    out = bradley_terry_loss(rewards, rewards.clone())
    assert torch.allclose(out.losses, torch.full((4,), math.log(2.0)), atol=1e-7)
    assert torch.equal(out.centering_losses, torch.zeros(4))


def test_mean_loss_is_trls_reward_loss_with_margin_and_centring():
    torch.manual_seed(0)
    chosen, rejected, margin = torch.randn(8), torch.randn(8), torch.rand(8)
    c = 0.01
    # trl RewardTrainer.compute_loss: -logsigmoid(rc - rr - margin).mean() + c * mean((rc + rr) ** 2)
    trl = -F.logsigmoid(chosen - rejected - margin).mean() + c * torch.mean((chosen + rejected) ** 2)
    out = bradley_terry_loss(chosen, rejected, margin, center_coefficient=c)
    assert out.losses.mean().item() == pytest.approx(trl.item(), abs=1e-6)
    assert torch.allclose(out.centering_losses, c * (chosen + rejected) ** 2)


def test_gradient_matches_the_derivative_of_the_equation():
    chosen = torch.tensor([0.3, -1.0], requires_grad=True)
    rejected = torch.tensor([0.5, -2.0], requires_grad=True)
    m, c = 0.25, 0.1
    bradley_terry_loss(chosen, rejected, m, c).losses.sum().backward()
    d = (chosen - rejected - m).detach()
    s = (chosen + rejected).detach()
    # dL/dr_w = -(1 - sigma(d)) + 2 c s ; dL/dr_l = (1 - sigma(d)) + 2 c s
    assert torch.allclose(chosen.grad, -(1 - torch.sigmoid(d)) + 2 * c * s, atol=1e-6)
    assert torch.allclose(rejected.grad, (1 - torch.sigmoid(d)) + 2 * c * s, atol=1e-6)


def test_margin_shifts_the_required_gap_and_loss_stays_finite():
    chosen, rejected = torch.tensor([1.0]), torch.tensor([0.0])
    with_margin = bradley_terry_loss(chosen, rejected, margin=1.0).losses
    assert with_margin.item() == pytest.approx(math.log(2.0))  # gap == margin: as if rewards were equal
    assert bradley_terry_loss(chosen, rejected).losses.item() < with_margin.item()
    far = bradley_terry_loss(torch.tensor([-200.0]), torch.tensor([200.0])).losses
    assert torch.isfinite(far).all() and far.item() == pytest.approx(400.0)


def test_negative_centring_coefficient_is_rejected():
    with pytest.raises(ValueError, match="center_coefficient"):
        bradley_terry_loss(torch.zeros(1), torch.zeros(1), center_coefficient=-0.1)
