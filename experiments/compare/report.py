"""Reading the runs back (TensorBoard scalars), the Best-of-N reference curve, results.md and frontier.png."""

from __future__ import annotations

import json
import math
import os
import statistics
from collections import defaultdict

from experiments.compare.plan import Run
from lit_align.utils.scalars import read_scalars

EVAL_TAGS = ("eval/reward", "eval/kl", "eval/length")


def run_result(run: Run, log_dir: str, wall_seconds: float, steps: int) -> dict:
    """Final and per-evaluation numbers of one finished run, from its TensorBoard scalars."""
    scalars = read_scalars(log_dir)
    missing = [tag for tag in EVAL_TAGS if tag not in scalars]
    if missing:
        raise KeyError(f"{log_dir}: tags {missing} were not logged; logged: {sorted(scalars)}")
    kl = dict(scalars["eval/kl"])
    trajectory = [(step, kl[step], reward) for step, reward in scalars["eval/reward"] if step in kl]
    throughput = scalars.get("throughput/tokens_per_sec", [(0, float("nan"))])[-1][1]
    return {
        "method": run.method.name, "label": run.method.label(run.value), "value": run.value, "seed": run.seed,
        "run": f"{run.name}/{run.version}", "log_dir": log_dir,
        "reward": trajectory[-1][2], "kl": trajectory[-1][1], "length": scalars["eval/length"][-1][1],
        "start_reward": trajectory[0][2], "start_kl": trajectory[0][1], "steps": steps, "trajectory": trajectory,
        "wall_seconds": wall_seconds, "tokens_per_sec": throughput,
    }


def best_of_n_curve(model_path: str, prompts: list[str], ns: list[int], max_new_tokens: int = 24, seed: int = 4321) -> list[dict]:
    """r(N): mean over prompts of E[max of N rewards] of the model's samples, with KL* = log N - (N-1)/N
    and ``kl_ties``, the tie-aware KL of Best-of-N of the same samples (``empirical_bon_kl``).

    Draws max(ns) samples per prompt once and uses the unbiased all-subsets estimator for every N.
    """
    from lit_align.data.tokenize import PromptCompletionEncoder
    from lit_align.online.generation import sample_completions
    from lit_align.losses.bond import analytic_bon_kl, empirical_bon_kl, expected_best_of_n
    from lit_align.modeling import load_causal_lm, load_tokenizer
    from lit_align.rewards import LexiconSentimentReward

    tokenizer = load_tokenizer(model_path)
    model = load_causal_lm(model_path, tokenizer)
    encoder = PromptCompletionEncoder(tokenizer, 48, 16, "auto")
    ids = [encoder.encode_prompt(p) for p in prompts]
    m = max(ns)
    samples = sample_completions(model, tokenizer, ids, m, max_new_tokens, batch_size=256, seed=seed)
    reward = LexiconSentimentReward()
    texts = [tokenizer.decode(c, skip_special_tokens=True) for per_prompt in samples for c in per_prompt]
    rewards = reward([p for p in prompts for _ in range(m)], texts).view(len(prompts), m)
    return [{"n": n, "kl": analytic_bon_kl(n), "kl_ties": empirical_bon_kl(rewards, n).mean().item(), "reward": expected_best_of_n(rewards, n).mean().item()} for n in ns]


def bon_reward_at(kl: float, curve: list[dict]) -> float | None:
    """Best-of-N reward at ``kl`` on ``curve`` (linear between its points, KL = log N - (N-1)/N);
    None past its last point."""
    points = sorted((b["kl"], b["reward"]) for b in curve)
    if kl > points[-1][0]:
        return None
    for (k0, r0), (k1, r1) in zip(points, points[1:]):
        if kl <= k1:
            return r0 + (r1 - r0) * (max(kl, k0) - k0) / (k1 - k0)
    return points[0][1]


def rows_from_results_md(path: str, exclude: set[str]) -> list[dict]:
    """Per-run results of an earlier comparison, read back from its results.md ("Every run" table),
    for the methods not in ``exclude``: final numbers only (no trajectory). Used by ``run.py
    --keep-rows-from`` when only some rows are rerun."""
    rows, in_table = [], False
    with open(path) as f:
        for line in f:
            if line.startswith("## "):
                in_table = line.strip() == "## Every run"
                continue
            if in_table and line.startswith("| run |"):
                # Columns by their header names: the table gained columns over time (Δ BoN, CPU time).
                column = {c.strip(): i for i, c in enumerate(line.strip().strip("|").split("|"))}
                continue
            if not (in_table and line.startswith("| `")):
                continue
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            cell = lambda name: float(cells[column[name]]) if name in column and cells[column[name]] else float("nan")  # noqa: E731
            run = cells[0].strip("`")
            method, label, seed = run.split("/")
            if method in exclude:
                continue
            value = None if label == "none" else float(label.split("=")[1])
            steps, start, reward, kl = int(cell("steps")), cell("start reward"), cell("final reward"), cell("final KL")
            rows.append({
                "method": method, "label": label, "value": value, "seed": int(seed.split("=")[1]), "run": run, "steps": steps,
                "start_reward": start, "reward": reward, "kl": kl, "length": cell("length"), "wall_seconds": cell("wall time (s)"),
                "cpu_seconds": cell("CPU time (s)"), "tokens_per_sec": cell("train tokens/s"), "trajectory": [(0, 0.0, start), (steps, kl, reward)],
                "from": path,
            })
    return rows


def _mean_spread(values: list[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (None for a single seed)."""
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


def aggregate(results: list[dict]) -> list[dict]:
    """One row per (method, strength): mean and standard deviation over seeds."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in results:
        groups[(r["method"], r["label"])].append(r)
    rows = []
    for (method, label), group in groups.items():
        row = {"method": method, "label": label, "value": group[0]["value"], "seeds": len(group)}
        for key in ("reward", "kl", "wall_seconds", "cpu_seconds", "tokens_per_sec"):
            row[key], row[key + "_sd"] = _mean_spread([g.get(key, float("nan")) for g in group])
        rows.append(row)
    return rows


def _fmt(mean: float, sd: float | None, digits: int = 3) -> str:
    return f"{mean:.{digits}f}" + (f" ± {sd:.{digits}f}" if sd is not None else "")


def gap_to_best_of_n(result: dict, curves: dict[int, list[dict]]) -> float | None:
    """Final reward minus Best-of-N's reward at the same KL, on the curve of the run's OWN seed
    (its held-out prompts); None past the curve's last point."""
    curve = curves.get(result["seed"]) or curves.get(str(result["seed"]))
    at = bon_reward_at(result["kl"], curve) if curve else None
    return None if at is None else result["reward"] - at


def mean_curve(curves: dict[int, list[dict]]) -> list[dict]:
    """The seeds' Best-of-N curves averaged point by point (same N list)."""
    per_seed = list(curves.values())
    return [{**points[0], "reward": statistics.fmean(p["reward"] for p in points), "kl_ties": statistics.fmean(p.get("kl_ties", float("nan")) for p in points)} for points in zip(*per_seed)]


def write_results(path: str, results: list[dict], curves: dict[int, list[dict]], failed: dict[str, str], header: str) -> None:
    """results.md: the per-setting table (mean ± sd over seeds), per-run rows scored against their own
    seed's Best-of-N curve, and the curves."""
    for r in results:
        r["bon_gap"] = gap_to_best_of_n(r, curves)
    lines = [header, "", "## Mean ± standard deviation over seeds", "",
             "Δ BoN: final reward minus the Best-of-N reward at the same KL, each run on the curve of its own seed's held-out prompts (linear between N; blank past N = 64).", "",
             "| method | strength | seeds | reward | KL(π ‖ SFT) | Δ BoN | wall time (s) | CPU time (s) | train tokens/s |", "|---|---|---|---|---|---|---|---|---|"]
    for row in aggregate(results):
        gaps = [r["bon_gap"] for r in results if (r["method"], r["label"]) == (row["method"], row["label"])]
        gap = _fmt(*_mean_spread(gaps)) if gaps and None not in gaps else ""
        lines.append(f"| {row['method']} | {row['label']} | {row['seeds']} | {_fmt(row['reward'], row['reward_sd'])} | {_fmt(row['kl'], row['kl_sd'], 2)} | {gap} "
                     f"| {_fmt(row['wall_seconds'], row['wall_seconds_sd'], 1)} | {_fmt(row['cpu_seconds'], row['cpu_seconds_sd'], 1)} | {_fmt(row['tokens_per_sec'], row['tokens_per_sec_sd'], 0)} |")
    lines += ["", "## Every run", "", "| run | steps | start reward | final reward | final KL | Δ BoN (own seed) | length | wall time (s) | CPU time (s) | train tokens/s |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        gap = "" if r["bon_gap"] is None else f"{r['bon_gap']:+.3f}"
        lines.append(f"| `{r['run']}` | {r['steps']} | {r['start_reward']:.3f} | {r['reward']:.3f} | {r['kl']:.2f} | {gap} | {r['length']:.1f} | {r['wall_seconds']:.1f} | {r.get('cpu_seconds', float('nan')):.1f} | {r['tokens_per_sec']:.0f} |")
    if curves:
        seeds = sorted(curves, key=int)
        lines += ["", "## Best-of-N of the SFT start, per seed (reference curves)", "",
                  "Each seed's curve is built on that seed's held-out prompts (the prompts its runs are evaluated on), from 64 samples per prompt. "
                  "KL with ties: KL(Best-of-N ‖ SFT) of those samples with the tie-aware Best-of-N likelihood (`empirical_bon_kl`); "
                  "it is below log N − (N−1)/N because tied rewards leave Best-of-N no choice, and for N near 64 also because 64 samples are few.", "",
                  "| N | log N − (N−1)/N | " + " | ".join(f"KL with ties (seed {s}) | r(N) (seed {s})" for s in seeds) + " |",
                  "|---|---|" + "---|---|" * len(seeds)]
        for points in zip(*(curves[s] for s in seeds)):
            lines.append(f"| {points[0]['n']} | {points[0]['kl']:.3f} | " + " | ".join(f"{p.get('kl_ties', float('nan')):.3f} | {p['reward']:.3f}" for p in points) + " |")
    if failed:
        lines += ["", "## Runs without results (failed, or not run yet)", ""] + [f"- `{name}`: {error}" for name, error in failed.items()]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def plot_frontier(path: str, results: list[dict], bon: list[dict], title: str) -> bool:
    """frontier.png: reward vs KL, one series per method (mean over seeds per strength, with the
    seeds' spread as error bars; faint dots are every intermediate evaluation), and Best-of-N
    (``bon``: the seeds' curves averaged)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("lit_align compare: matplotlib is not installed, so frontier.png was not drawn (pip install 'lit_align[plot]'); results.md is complete.")
        return False
    fig, ax = plt.subplots(figsize=(8, 5.5))
    colors = plt.get_cmap("tab10")
    methods = list(dict.fromkeys(r["method"] for r in results))
    for i, method in enumerate(methods):
        color = colors(i % 10)
        for r in (r for r in results if r["method"] == method):
            ax.scatter([t[1] for t in r["trajectory"][1:]], [t[2] for t in r["trajectory"][1:]], s=8, color=color, alpha=0.25, linewidths=0)
        rows = sorted((row for row in aggregate(results) if row["method"] == method), key=lambda row: row["kl"])
        ax.errorbar([row["kl"] for row in rows], [row["reward"] for row in rows], xerr=[row["kl_sd"] or 0 for row in rows], yerr=[row["reward_sd"] or 0 for row in rows],
                    color=color, marker="o", capsize=2, label=method)
    if bon:
        ax.plot([b["kl"] for b in bon], [b["reward"] for b in bon], "k--", marker="s", markersize=4, label="Best-of-N of SFT (KL = log N − (N−1)/N)")
        if all("kl_ties" in b for b in bon):
            ax.plot([b["kl_ties"] for b in bon], [b["reward"] for b in bon], "k:", linewidth=1, label="Best-of-N of SFT (tie-aware KL of 64 samples)")
        for b in bon:
            ax.annotate(f"N={b['n']}", (b["kl"], b["reward"]), textcoords="offset points", xytext=(4, -10), fontsize=7)
    starts = [r["start_reward"] for r in results]
    if starts:
        ax.scatter([0.0], [statistics.fmean(starts)], marker="*", s=160, color="black", zorder=5, label="SFT start")
    # A run that drifts far (DPO at small beta can reach KL 15+) would squash every other point
    # into the left edge: past 3x the Best-of-N range, stretch small KL and compress large KL.
    widest = max([r["kl"] for r in results] + [t[1] for r in results for t in r.get("trajectory", [])[1:]], default=0.0)
    symlog = bool(bon) and widest > 3 * max(b["kl"] for b in bon)
    if symlog:
        ax.set_xscale("symlog", linthresh=1.0, linscale=1.5)
    ax.set_xlabel("KL(policy ‖ SFT reference), sampled estimate (nats)" + ("; linear below 1, log above" if symlog else ""))
    ax.set_ylabel("ground-truth reward of samples (held-out prompts)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def save_json(path: str, data) -> None:
    with open(path, "w") as f:
        json.dump(data, f, indent=1, default=lambda x: None if isinstance(x, float) and math.isnan(x) else str(x))


def load_json(path: str):
    with open(path) as f:
        return json.load(f)

