"""frontier.png: every method's reward–KL frontier with its 95% band over seeds, Best-of-N, and the
matched-KL values of results.md as markers."""

from __future__ import annotations

import math

from experiments.compare.stats import bon_frontier, frontier, mean_ci
from experiments.compare.tables import BEST_OF_N, MATCHED_KL, methods_of


def band(per_seed_at: dict[float, dict[int, float]]) -> tuple[list[float], list[float], list[float]]:
    """(KL, mean, half-width) where 2 or more seeds reach the KL."""
    xs, means, halves = [], [], []
    for kl, per_seed in sorted(per_seed_at.items()):
        mean, half, n = mean_ci(per_seed.values())
        if n >= 2:
            xs.append(kl), means.append(mean), halves.append(half or 0.0)
    return xs, means, halves


def plot_frontier(path: str, results: list[dict], curves: dict, table: dict, title: str) -> bool:
    """Draw frontier.png; False (and say so) without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("lit_align compare: matplotlib is not installed, so frontier.png was not drawn (pip install 'lit_align[plot]'); results.md is complete.")
        return False
    widest = max([r["kl"] for r in results] + [0.5])
    grid = sorted(set([0.0] + [widest * i / 60 for i in range(1, 61)] + list(MATCHED_KL)))
    fig, ax = plt.subplots(figsize=(10, 6))
    colors = plt.get_cmap("tab20")
    series = [(m, {kl: frontier(results, m, kl) for kl in grid}) for m in methods_of(results)]
    if curves:
        series.append((BEST_OF_N, {kl: bon_frontier(curves, kl) for kl in grid}))
    for i, (method, per_kl) in enumerate(series):
        color = "black" if method == BEST_OF_N else colors(i % 20)
        xs, means, halves = band(per_kl)
        if not xs:
            continue
        style = dict(linestyle="--", linewidth=2) if method == BEST_OF_N else dict(linewidth=1.5)
        ax.plot(xs, means, color=color, label=method, **style)
        ax.fill_between(xs, [m - h for m, h in zip(means, halves)], [m + h for m, h in zip(means, halves)], color=color, alpha=0.15, linewidth=0)
        marks = [(kl, *mean_ci(table[method][kl].values())[:2]) for kl in MATCHED_KL if method in table and len(table[method][kl]) >= 2]
        ax.errorbar([m[0] for m in marks], [m[1] for m in marks], yerr=[m[2] or 0 for m in marks], fmt="o", color=color, markersize=4, capsize=2)
        finals = [r for r in results if r["method"] == method]
        ax.scatter([r["kl"] for r in finals], [r["reward"] for r in finals], s=10, color=color, alpha=0.35, linewidths=0)
    for kl in MATCHED_KL:
        ax.axvline(kl, color="grey", linewidth=0.5, alpha=0.4)
    if widest > 8:
        ax.set_xscale("symlog", linthresh=1.0, linscale=1.0)
    ax.set_xlabel("KL(π ‖ SFT start), sampled (nats)" + ("; linear below 1, log above" if widest > 8 else "") + " — grey lines: matched KL values")
    ax.set_ylabel("ground-truth reward of samples (held-out prompts)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.25)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5), title="mean, 95% band over seeds;\ndots: each run's final point", title_fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return not math.isnan(widest)
