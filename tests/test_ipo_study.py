"""The IPO paper's toy study (arXiv 2310.12036, Sec. 5.4) with the library's dpo_loss / ipo_loss.

With deterministic preferences y1 > y2 > y3, DPO drives pi(y1) -> 1 and pi(y3) -> 0 whatever tau,
while IPO converges to its finite regularised optimum, far from greedy when tau is large.
"""

from __future__ import annotations

import torch

from experiments.compare.ipo_study import PAIRS, REFERENCE_LOGP, ipo_optimum, simulate
from lit_align.losses.ipo import ipo_loss

TAUS = [0.1, 1.0]


def test_ipo_optimum_is_the_minimiser_of_the_ipo_loss_on_the_three_pairs():
    for tau in (0.1, 0.5, 1.0, 3.0):
        theta = ipo_optimum(tau).log().requires_grad_(True)
        logp = theta.log_softmax(-1)
        reference = torch.full((3,), REFERENCE_LOGP)
        loss = ipo_loss(logp[PAIRS[:, 0]], logp[PAIRS[:, 1]], reference, reference, tau=tau).losses.sum()
        (grad,) = torch.autograd.grad(loss, theta)
        assert grad.abs().max() < 1e-5, (tau, grad)
    # Strong regularisation keeps the optimum near the uniform reference; weak lets it approach greedy.
    assert ipo_optimum(1.0)[0] < 0.46 and ipo_optimum(0.1)[0] > 0.96


def test_dpo_goes_greedy_for_every_tau_while_ipo_stays_at_its_optimum():
    dpo = simulate("dpo", TAUS, seeds=2, steps=2000, record_every=500)[-1]  # [tau, seed, action]
    ipo = simulate("ipo", TAUS, seeds=2, steps=2000, record_every=500)[-1]
    for i, tau in enumerate(TAUS):
        # DPO: even the strongest regularisation does not stop the extremes (the paper's Fig. 1 point).
        assert dpo[i, :, 0].min() > 0.98, (tau, dpo[i])
        assert dpo[i, :, 2].max() < 1e-3, (tau, dpo[i])
        # IPO: at its regularised target, within Adam's mini-batch jitter.
        assert (ipo[i] - ipo_optimum(tau)).abs().max() < 0.03, (tau, ipo[i], ipo_optimum(tau))
    strong = TAUS.index(1.0)
    assert ipo[strong, :, 0].max() < 0.5 and ipo[strong, :, 2].min() > 0.2


def test_simulation_starts_at_the_uniform_reference():
    probs = simulate("ipo", [0.5], seeds=1, steps=10, record_every=10)
    assert torch.allclose(probs[0], torch.full((1, 1, 3), 1 / 3))
    assert probs.shape == (2, 1, 1, 3)
