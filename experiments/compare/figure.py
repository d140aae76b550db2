"""frontier.png: every method's reward–KL frontier with its 95% band over seeds, Best-of-N, and the
matched-KL values of results.md as markers."""

from __future__ import annotations

from experiments.compare.stats import bon_frontier, frontier, majority, mean_ci
from experiments.compare.tables import BEST_OF_N, MATCHED_KL, methods_of


def band(per_seed_at: dict[float, dict[int, float]], seeds: int) -> tuple[list[float], list[float], list[float]]:
    """(KL, mean, half-width) where most seeds reach the KL: a stretch only one runaway seed reaches
    would make the line jump between different sets of seeds."""
    xs, means, halves = [], [], []
    for kl, per_seed in sorted(per_seed_at.items()):
        mean, half, n = mean_ci(per_seed.values())
        if n >= majority(seeds):
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
    # The matched-KL range, with room: a run that ran away (KL 20-50) would squash every frontier
    # into the left edge, so runs past the edge are drawn on it as right-pointing triangles.
    edge = 1.5 * max(MATCHED_KL)
    grid = sorted(set([0.0] + [edge * i / 60 for i in range(1, 61)] + list(MATCHED_KL)))
    seeds = len({r["seed"] for r in results})
    fig, ax = plt.subplots(figsize=(10, 6))
    colors = plt.get_cmap("tab10")
    series = [(m, {kl: frontier(results, m, kl) for kl in grid}) for m in methods_of(results)]
    shown: list[float] = []  # every mean and final point drawn: the y range (a wide band is clipped, not the data)
    if curves:
        series.append((BEST_OF_N, {kl: bon_frontier(curves, kl) for kl in grid}))
    for i, (method, per_kl) in enumerate(series):
        # Ten distinct colours, then the same colours dashed: tab20's paired shades are hard to tell apart.
        color = "black" if method == BEST_OF_N else colors(i % 10)
        finals = [r for r in results if r["method"] == method]
        inside = [r for r in finals if r["kl"] <= edge]
        ax.scatter([r["kl"] for r in inside], [r["reward"] for r in inside], s=10, color=color, alpha=0.35, linewidths=0)
        ax.scatter([edge] * (len(finals) - len(inside)), [r["reward"] for r in finals if r["kl"] > edge], s=18, marker=">", color=color, alpha=0.5, linewidths=0)
        shown += [r["reward"] for r in finals]
        xs, means, halves = band(per_kl, seeds)
        if not xs:
            continue
        style = dict(linestyle="--", linewidth=2) if method == BEST_OF_N else dict(linewidth=1.5, linestyle="-" if i < 10 else "-.")
        ax.plot(xs, means, color=color, label=method, **style)
        ax.fill_between(xs, [m - h for m, h in zip(means, halves)], [m + h for m, h in zip(means, halves)], color=color, alpha=0.15, linewidth=0)
        # Markers where the band is drawn (most seeds reach the KL): a 2-seed t interval (t = 12.7) spans the whole axis.
        marks = [(kl, *mean_ci(table[method][kl].values())[:2]) for kl in MATCHED_KL if method in table and len(table[method][kl]) >= majority(seeds)]
        shown += means
        ax.errorbar([m[0] for m in marks], [m[1] for m in marks], yerr=[m[2] or 0 for m in marks], fmt="o", color=color, markersize=4, capsize=2)
    for kl in MATCHED_KL:
        ax.axvline(kl, color="grey", linewidth=0.5, alpha=0.4)
    ax.set_xlim(0, edge * 1.02)
    if shown:
        margin = 0.05 * (max(shown) - min(shown) or 1.0)
        ax.set_ylim(min(shown) - margin, max(shown) + margin)
    ax.set_xlabel(f"KL(π ‖ SFT start), sampled (nats) — grey lines: matched KL values; ▶ at {edge:g}: runs that ended further out")
    ax.set_ylabel("ground-truth reward of samples (held-out prompts)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.25)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5), title="mean, 95% band over seeds\n(where most seeds reach the KL);\ndots: each run's final point", title_fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
