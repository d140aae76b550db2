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
    """r(N): mean over prompts of E[max of N rewards] of the model's samples, with KL* = log N - (N-1)/N.

    Draws max(ns) samples per prompt once and uses the unbiased all-subsets estimator for every N.
    """
    from lit_align.data.tokenize import PromptCompletionEncoder
    from lit_align.generation import sample_completions
    from lit_align.losses.bond import analytic_bon_kl, expected_best_of_n
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
    return [{"n": n, "kl": analytic_bon_kl(n), "reward": expected_best_of_n(rewards, n).mean().item()} for n in ns]


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


def write_results(path: str, results: list[dict], bon: list[dict], failed: dict[str, str], header: str) -> None:
    """results.md: the per-setting table (mean ± sd over seeds), per-run rows, the Best-of-N curve."""
    lines = [header, "", "## Mean ± standard deviation over seeds", "",
             "| method | strength | seeds | reward | KL(π ‖ SFT) | wall time (s) | CPU time (s) | train tokens/s |", "|---|---|---|---|---|---|---|---|"]
    for row in aggregate(results):
        lines.append(f"| {row['method']} | {row['label']} | {row['seeds']} | {_fmt(row['reward'], row['reward_sd'])} | {_fmt(row['kl'], row['kl_sd'], 2)} "
                     f"| {_fmt(row['wall_seconds'], row['wall_seconds_sd'], 1)} | {_fmt(row['cpu_seconds'], row['cpu_seconds_sd'], 1)} | {_fmt(row['tokens_per_sec'], row['tokens_per_sec_sd'], 0)} |")
    lines += ["", "## Every run", "", "| run | steps | start reward | final reward | final KL | length | wall time (s) | CPU time (s) | train tokens/s |", "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| `{r['run']}` | {r['steps']} | {r['start_reward']:.3f} | {r['reward']:.3f} | {r['kl']:.2f} | {r['length']:.1f} | {r['wall_seconds']:.1f} | {r.get('cpu_seconds', float('nan')):.1f} | {r['tokens_per_sec']:.0f} |")
    if bon:
        lines += ["", "## Best-of-N of the SFT start (reference curve)", "", "| N | log N − (N−1)/N | r(N) |", "|---|---|---|"]
        lines += [f"| {b['n']} | {b['kl']:.3f} | {b['reward']:.3f} |" for b in bon]
    if failed:
        lines += ["", "## Runs without results (failed, or not run yet)", ""] + [f"- `{name}`: {error}" for name, error in failed.items()]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def plot_frontier(path: str, results: list[dict], bon: list[dict], title: str) -> bool:
    """frontier.png: reward vs KL, one series per method (mean over seeds per strength, with the
    seeds' spread as error bars; faint dots are every intermediate evaluation), and Best-of-N."""
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

