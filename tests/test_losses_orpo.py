"""ORPO loss (arXiv 2403.07691) checked against the paper's equations."""

from __future__ import annotations

import math

import pytest
import torch

from lit_align.losses import log_odds, orpo_loss, sft_loss
from lit_align.ops import SequenceLogps


def logps(sums: list[float], counts: list[float], requires_grad: bool = False) -> SequenceLogps:
    return SequenceLogps(torch.tensor(sums, requires_grad=requires_grad), torch.tensor(counts))


def test_matches_definition():
    chosen, rejected = logps([-2.0, -9.0], [4, 3]), logps([-6.0, -4.0], [3, 8])
    out = orpo_loss(chosen, rejected, odds_ratio_weight=0.25)
    expected_or = []
    for (cs, cc), (rs, rc) in zip([(-2.0, 4), (-9.0, 3)], [(-6.0, 3), (-4.0, 8)]):
        p_w, p_l = math.exp(cs / cc), math.exp(rs / rc)  # length-normalised likelihoods
        ratio = (p_w / (1 - p_w)) / (p_l / (1 - p_l))
        expected_or.append(-math.log(1 / (1 + 1 / ratio)))  # -log sigma(log ratio)
    assert out.odds_ratio_losses.tolist() == pytest.approx(expected_or, rel=1e-5)
    nll = (2.0 + 9.0) / 7  # token-level NLL of the chosen side
    assert out.losses.mean().item() == pytest.approx(nll + 0.25 * sum(expected_or) / 2, rel=1e-5)
    assert out.chosen_rewards.tolist() == pytest.approx([0.25 * -0.5, 0.25 * -3.0])
    assert out.rejected_rewards.tolist() == pytest.approx([0.25 * -2.0, 0.25 * -0.5])
    # Pair 0 prefers chosen (log-odds > 0, L_OR < log 2); pair 1 prefers rejected.
    assert out.log_odds[0] > 0 > out.log_odds[1]
    assert out.odds_ratio_losses[0] < math.log(2) < out.odds_ratio_losses[1]


def test_without_odds_ratio_term_is_sft_nll():
    chosen = logps([-3.0, -10.0, -1.5], [2, 9, 1], requires_grad=True)
    rejected = logps([-4.0, -2.0, -8.0], [5, 1, 4])
    out = orpo_loss(chosen, rejected, odds_ratio_weight=0.0)
    # Unequal lengths: a mean of per-sequence means would differ (it is 2.87, this is 1.208).
    assert out.losses.mean().item() == pytest.approx(sft_loss(chosen).item())
    assert out.losses.mean().item() == pytest.approx(14.5 / 12)
    (grad,) = torch.autograd.grad(out.losses.mean(), chosen.sum)
    torch.testing.assert_close(grad, torch.full((3,), -1 / 12))


def test_stable_when_logps_near_zero():
    lp = torch.tensor([-1e-8, -1e-8, -1e-3], requires_grad=True)
    other = torch.tensor([-1e-8, -0.5, -1e-8], requires_grad=True)
    naive = (lp - torch.log1p(-torch.exp(lp))) - (other - torch.log1p(-torch.exp(other)))
    assert torch.isnan(naive[0]) and torch.isinf(naive[1])  # why the stable form is needed
    out = orpo_loss(SequenceLogps(lp, torch.ones(3)), SequenceLogps(other, torch.ones(3)), odds_ratio_weight=1.0)
    assert torch.isfinite(out.losses).all() and torch.isfinite(out.log_odds).all()
    assert out.log_odds[0].item() == pytest.approx(0.0, abs=1e-4)  # equal probabilities: odds ratio 1
    # log odds(P) = log P - log(1 - P); for log P = -1e-8, 1 - P = 1e-8 to 8 digits.
    expected = (-1e-8 - math.log(1e-8)) - (-0.5 - math.log(1 - math.exp(-0.5)))
    assert out.log_odds[1].item() == pytest.approx(expected, rel=1e-5)
    out.losses.sum().backward()
    assert torch.isfinite(lp.grad).all() and torch.isfinite(other.grad).all()


def test_log_odds_is_fp32_even_for_bf16_input():
    assert log_odds(torch.tensor([-0.1], dtype=torch.bfloat16)).dtype == torch.float32


def test_nll_over_prompt_and_completion_is_token_level_over_both():
    """The authors'/TRL convention: prompt tokens of the chosen rows join the token-level NLL."""
    chosen, rejected = logps([-4.0, -9.0], [2.0, 3.0]), logps([-6.0, -2.0], [3.0, 1.0])
    prompt = logps([-5.0, -1.0], [4.0, 1.0])
    completion_only = orpo_loss(chosen, rejected, 0.0)
    both = orpo_loss(chosen, rejected, 0.0, chosen_prompt=prompt)
    assert completion_only.losses.mean().item() == pytest.approx(13.0 / 5.0)
    assert both.losses.mean().item() == pytest.approx((13.0 + 6.0) / (5.0 + 5.0))
    # The odds ratio stays on the completion's mean log-prob either way.
    assert torch.equal(both.odds_ratio_losses, completion_only.odds_ratio_losses)
