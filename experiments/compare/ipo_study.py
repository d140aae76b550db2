"""The IPO paper's toy study (Azar et al. 2023, arXiv 2310.12036, Sec. 5.4): DPO vs IPO on deterministic preferences.

    python experiments/compare/ipo_study.py [--steps 18000] [--seeds 10] [--taus 0.1 0.5 1.0] [--out outputs/compare]

Three actions y1, y2, y3; the policy is softmax(theta) with theta initialised at 0, so it starts at the
uniform reference. The preferences are a total order y1 > y2 > y3 that every label agrees with
(deterministic): the data are the pairs (y1, y2), (y2, y3), (y1, y3), and each step draws a
mini-batch of 9 of them uniformly. Adam, learning rate 0.01, as in the paper.

The paper's point: DPO's loss -log sigma(tau h) keeps decreasing as the margin h grows, so with
deterministic labels it drives pi(y1) -> 1 and pi(y3) -> 0 for EVERY tau — the KL regularisation
is ignored. IPO's squared loss (h - 1/(2 tau))^2 has a finite minimum, which for this data is
theta = (2c/3, 0, -2c/3) with c = 1/(2 tau) (``ipo_optimum``): strong regularisation (large tau)
keeps the policy close to uniform.

The losses are the library's own ``dpo_loss`` / ``ipo_loss`` on exact log-probs (no language model).
All (tau, seed) problems are optimised in one tensor: Adam is per-coordinate, so summing their
independent losses trains each exactly as if it ran alone.
"""

from __future__ import annotations

import argparse
import math
import os
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))

from lit_align.losses.dpo import dpo_loss  # noqa: E402
from lit_align.losses.ipo import ipo_loss  # noqa: E402

# (preferred, dispreferred) index pairs of the total order y1 > y2 > y3.
PAIRS = torch.tensor([[0, 1], [1, 2], [0, 2]])
REFERENCE_LOGP = math.log(1 / 3)  # uniform reference over three actions


def simulate(loss: str, taus: list[float], seeds: int = 10, steps: int = 18000, batch_size: int = 9, lr: float = 0.01, record_every: int = 100) -> torch.Tensor:
    """Action probabilities over training, shape [records, len(taus), seeds, 3] (record 0 = init)."""
    if loss not in ("dpo", "ipo"):
        raise ValueError(f"loss must be 'dpo' or 'ipo', got {loss!r}")
    theta = torch.zeros(len(taus), seeds, 3, requires_grad=True)
    tau = torch.tensor(taus).view(-1, 1, 1)
    optimizer = torch.optim.Adam([theta], lr=lr)
    generator = torch.Generator().manual_seed(0)  # each seed's mini-batches differ; same draws for DPO and IPO
    records = [theta.detach().softmax(-1).clone()]
    for step in range(1, steps + 1):
        pairs = PAIRS[torch.randint(len(PAIRS), (len(taus), seeds, batch_size), generator=generator)]
        logp = theta.log_softmax(-1)
        chosen, rejected = logp.gather(-1, pairs[..., 0]), logp.gather(-1, pairs[..., 1])
        reference = torch.full_like(chosen, REFERENCE_LOGP)
        out = dpo_loss(chosen, rejected, reference, reference, beta=tau) if loss == "dpo" else ipo_loss(chosen, rejected, reference, reference, tau=tau)
        optimizer.zero_grad()
        out.losses.mean(-1).sum().backward()
        optimizer.step()
        if step % record_every == 0:
            records.append(theta.detach().softmax(-1).clone())
    return torch.stack(records)


def ipo_optimum(tau: float) -> torch.Tensor:
    """IPO's minimiser for this data: the three pair margins a, b, a + b regress onto c = 1/(2 tau);
    least squares gives a = b = 2c/3, i.e. theta = (2c/3, 0, -2c/3)."""
    a = 2.0 / (3.0 * 2.0 * tau)
    return torch.tensor([a, 0.0, -a]).softmax(-1)


def plot(path: str, taus: list[float], curves: dict[str, torch.Tensor], record_every: int) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("ipo_study: matplotlib is not installed, so the plot was not drawn (pip install 'lit_align[plot]')")
        return False
    fig, axes = plt.subplots(2, len(taus), figsize=(3.2 * len(taus), 5.2), sharex=True, sharey=True, squeeze=False)
    for row, (name, probs) in enumerate(curves.items()):
        steps = [i * record_every for i in range(probs.shape[0])]
        for col, tau in enumerate(taus):
            ax = axes[row][col]
            for action, color in zip(range(3), ("tab:green", "tab:blue", "tab:red")):
                p = probs[:, col, :, action]
                ax.plot(steps, p.mean(-1), color=color, label=f"π(y{action + 1})")
                ax.fill_between(steps, p.min(-1).values, p.max(-1).values, color=color, alpha=0.2)
                if name == "IPO":
                    ax.axhline(ipo_optimum(tau)[action].item(), color=color, linestyle=":", linewidth=1)
            ax.set_title(f"{name}, τ = {tau:g}", fontsize=9)
            ax.set_ylim(-0.02, 1.02)
            ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    for ax in axes[-1]:
        ax.set_xlabel("step")
    for row in axes:
        row[0].set_ylabel("probability")
    fig.suptitle("Deterministic preferences y1 ≻ y2 ≻ y3: DPO goes greedy for every τ, IPO stays at its optimum (dotted)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def main(argv: list[str] | None = None) -> dict[str, torch.Tensor]:
    parser = argparse.ArgumentParser(description="DPO vs IPO on the IPO paper's 3-action toy problem (Sec. 5.4)")
    parser.add_argument("--steps", type=int, default=18000, help="Adam steps (paper: 18k)")
    parser.add_argument("--seeds", type=int, default=10, help="independent runs per tau (paper: 10)")
    parser.add_argument("--taus", type=float, nargs="+", default=[0.1, 0.5, 1.0])
    parser.add_argument("--out", default=os.path.join("outputs", "compare"))
    args = parser.parse_args(argv)
    record_every = max(1, args.steps // 200)
    curves = {name.upper(): simulate(name, args.taus, args.seeds, args.steps, record_every=record_every) for name in ("dpo", "ipo")}
    os.makedirs(args.out, exist_ok=True)
    lines = [f"# DPO vs IPO, deterministic preferences (IPO paper Sec. 5.4): {args.steps} Adam steps (lr 0.01, batch 9), {args.seeds} seeds", "",
             "| method | τ | π(y1) | π(y2) | π(y3) | IPO optimum π*(y1), π*(y2), π*(y3) |", "|---|---|---|---|---|---|"]
    for name, probs in curves.items():
        for col, tau in enumerate(args.taus):
            final = probs[-1, col].mean(0)
            optimum = ", ".join(f"{p:.3f}" for p in ipo_optimum(tau).tolist())
            lines.append(f"| {name} | {tau:g} | {final[0]:.4f} | {final[1]:.4f} | {final[2]:.4f} | {optimum} |")
    table = "\n".join(lines) + "\n"
    print(table)
    with open(os.path.join(args.out, "ipo_study.md"), "w") as f:
        f.write(table)
    if plot(os.path.join(args.out, "ipo_study.png"), args.taus, curves, record_every):
        print(f"ipo_study: wrote {os.path.join(args.out, 'ipo_study.png')} and ipo_study.md")
    return curves


if __name__ == "__main__":
    main()
