"""results.md and the figures of the over-optimisation study, from the cached pieces (see aggregate.py
for the statistics)."""

from __future__ import annotations

import json
import os

import numpy as np

from experiments.compare.stats import fmt_ci, mean_ci
from experiments.overoptimization.aggregate import Curve, bon_curve, bon_turn_down, bracket, curves, fit_bon, fit_rl, study_start, turn_down
from experiments.overoptimization.evaluate import spearman
from experiments.overoptimization.plan import Budget

MARKERS = {"bon": "o", "bond": "s", "online_dpo": "^", "offline_dpo": "v", "rloo": "D", "grpo": "P", "ppo": "*"}


def plot(path: str, proxy: str, description: str, bon: list[dict], gold_bon: list[dict], runs: dict[str, Curve], fits: dict) -> bool:
    """Three panels: gold against training step (seed mean, 95% band: where a turn shows), gold against d
    (95% error bars, Best-of-N, dashed fits), proxy against d."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("overoptimization: matplotlib is missing (pip install 'lit_align[plot]'); skipping the figures")
        return False
    fig, (steps, left, right) = plt.subplots(1, 3, figsize=(13, 4), dpi=80)
    colour = {}
    for name, curve in runs.items():
        mean = curve.mean()
        step = np.array([m["step"] for m in mean])
        d = np.array([m["d"] for m in mean])
        gold = np.array([m["gold"] for m in mean])
        half = np.array([m["gold_ci"] or 0.0 for m in mean])
        marker = MARKERS.get(curve.method, "x") + "-"
        line = steps.plot(step, gold, marker, ms=4, lw=1, label=f"{curve.method} ({len(curve.seeds)} seeds)")[0]
        colour[name] = line.get_color()
        steps.fill_between(step, gold - half, gold + half, color=colour[name], alpha=0.15, lw=0)
        left.errorbar(d, gold, yerr=half, fmt=marker, ms=4, lw=1, elinewidth=0.6, capsize=2, color=colour[name])
        right.plot(d, [m["proxy"] for m in mean], marker, ms=4, lw=1, color=colour[name])
        if name in fits:
            grid = np.linspace(0, d.max(), 50)
            left.plot(grid, fits[name].pooled(grid), "--", lw=0.8, color=colour[name])
    line = left.plot([b["d"] for b in bon], [b["gold"] for b in bon], "o-", ms=4, lw=1.5, color="black", label="Best-of-N (proxy picks)")[0]
    right.plot([b["d"] for b in bon], [b["proxy"] for b in bon], "o-", ms=4, lw=1.5, color="black")
    if "bon" in fits:
        grid = np.linspace(0, bon[-1]["d"], 50)
        left.plot(grid, fits["bon"].pooled(grid), "--", lw=0.8, color="black")
    left.plot([p["d"] for p in gold_bon], [p["gold"] for p in gold_bon], "k:", lw=1, label="Best-of-N (gold picks)")
    for axis in (steps, left):
        axis.axhline(0, color="grey", lw=0.5)
    steps.set(xlabel="training step", ylabel="gold reward − SFT's", title="gold by step: seed mean, 95% band")
    left.set(xlabel="d = sqrt(KL(pi || SFT))", ylabel="gold reward − SFT's", title="gold by d (dashed: Gao et al. fits)")
    right.set(xlabel="d = sqrt(KL(pi || SFT))", ylabel="proxy reward − SFT's", title=f"proxy {proxy} by d")
    steps.legend(fontsize=7, loc="lower right")
    left.legend(fontsize=7, loc="lower right")
    fig.suptitle(f"{proxy}: {description}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


def cost_table(folder: str, results: dict) -> list[str]:
    """Wall and CPU seconds of every piece, as measured when it ran (from the cache files); runs per method."""
    rows = []
    done = os.path.join(folder, "done")
    for file in sorted(os.listdir(done)) if os.path.isdir(done) else []:
        with open(os.path.join(done, file)) as f:
            piece = json.load(f)
        cpu = piece.get("cpu_seconds")
        rows.append(f"| {file[:-5]} | 1 | {piece['seconds']:.0f} | {'' if cpu is None else f'{cpu:.0f}'} |")
    by_method: dict[str, list[dict]] = {}
    for name, r in results.items():
        by_method.setdefault(name.split("/")[1], []).append(r)
    for method, rs in sorted(by_method.items()):
        rows.append(f"| runs: {method} (mean ± 95% t) | {len(rs)} | {fmt_ci(*mean_ci(r['wall_seconds'] for r in rs)[:2], 0)} | {fmt_ci(*mean_ci(r['cpu_seconds'] for r in rs)[:2], 0)} |")
    if not rows:
        return []
    return ["## Cost of each piece (as measured when it ran)", "",
            "Wall time depends on what else the machine ran; CPU time (this process's threads) much less so. Blank CPU: not recorded for that piece.", "",
            "| piece | count | wall (s) | CPU (s) |", "|---|---|---|---|"] + rows + [""]


def trajectory_rows(name: str, curve: Curve) -> list[str]:
    return [f"| {name} | {m['step']} | {m['n']} | {fmt_ci(m['kl'], m['kl_ci'], 2)} | {fmt_ci(m['d'], m['d_ci'], 2)} | {fmt_ci(m['gold'], m['gold_ci'])} | "
            f"{fmt_ci(m['proxy'], m['proxy_ci'])} | {m['spearman']:.2f} | {m['length']:.1f} |" for m in curve.mean()]


def write_report(folder: str, budget: Budget, quality: dict, pool: dict, dpo_info: dict, results: dict, command: str, machine: str, cache: str | None = None) -> dict:
    """``cache``: the study's output folder (its done/ files give the cost table); default ``folder``."""
    os.makedirs(folder, exist_ok=True)
    gold_all = np.array(pool["gold"]).ravel()
    start = study_start(results)
    lines = ["# Reward over-optimisation on the embedded task (gold reward known)", "",
             f"Command: `{command}`. {machine}.", "",
             "Gold = the embedded task's lexicon reward (`LexiconSentimentReward`); proxies = Bradley–Terry reward models "
             "(`configs/reward_model.yaml`) trained on pairs of SFT samples labelled by gold. Each method optimises each proxy "
             f"for {budget.steps} steps, once per seed ({', '.join(map(str, budget.seeds))}); it is measured at step 0 and every "
             f"{budget.eval_every} steps on {budget.eval_prompts} held-out prompts x {budget.samples_per_prompt} samples "
             f"({budget.eval_prompts * budget.samples_per_prompt} samples, drawn with the seed's own evaluation seed; sampled KL estimate). "
             "Rewards are relative to the SFT start (the mean of every run's step-0 measurement); d = sqrt(max(KL, 0)). "
             "± and bands: Student-t 95% intervals over seeds. Best-of-N uses KL = log N - (N-1)/N and the unbiased all-subsets "
             f"estimator on {budget.bon_pool} SFT samples per prompt, relative to N = 1; its intervals are a bootstrap over prompts. "
             "The statistics are explained in `experiments/overoptimization/aggregate.py`.", "",
             "## Proxies", "",
             "| proxy | what | held-out pair accuracy | Spearman vs gold, SFT samples | offline-DPO pairs: proxy agrees with gold |",
             "|---|---|---|---|---|"]
    for proxy in budget.proxies:
        q, info = quality[proxy.name], dpo_info[proxy.name]
        rho = spearman(np.array(pool[proxy.name]).ravel(), gold_all)
        lines.append(f"| {proxy.name} | {proxy.description} | {q['accuracy']:.3f} (n = {q['heldout_pairs']}) | {rho:.3f} (n = {gold_all.size}) | "
                     f"{info['gold_agreement']:.3f} of {info['gold_decided']} pairs with a gold preference ({info['pairs']} pairs) |")
    figures, verdicts, fit_rows, tables = [], [], [], []
    for proxy in budget.proxies:
        name = proxy.name
        bon = bon_curve(pool, name, budget.bon_ns)
        gold_bon = bon_curve(pool, name, budget.bon_ns, selector="gold")
        runs = curves(results, name, start)
        fits = {}
        bon_fit, bon_drop = fit_bon(pool, name, budget.bon_ns)
        if bon_fit:
            fits["bon"] = bon_fit
            fit_rows.append((name, "Best-of-N", "d(α − βd)", bon_fit, bon[-1]["d"]))
        verdicts.append(f"| {name} | Best-of-N | {bon_turn_down(bon, bon_drop)} |")
        for curve_name, curve in runs.items():
            verdicts.append(f"| {name} | {curve.method} | {turn_down(curve).words()} |")
            summary = fit_rl(curve)
            if summary:
                fits[curve_name] = summary
                fit_rows.append((name, curve.method, "d(α − β log d)", summary, max(p["d"] for s in curve.seeds for p in s)))
        tables += [f"### {name}", "", "Best-of-N against the proxy (gold picks: the same N, chosen by gold itself).", "",
                   "| N | KL | d | gold − SFT | proxy − SFT | gold − SFT if gold picked |", "|---|---|---|---|---|---|"]
        tables += [f"| {b['n']} | {b['kl']:.3f} | {b['d']:.3f} | {b['gold']:+.4f} | {b['proxy']:+.4f} | {g['gold']:+.4f} |" for b, g in zip(bon, gold_bon)]
        tables += ["", "Optimisation runs: seed mean ± 95% t interval per measurement; ρ = Spearman(proxy, gold) on that step's samples (seed mean); length in tokens.", "",
                   "| run | step | seeds | KL | d | gold − SFT | proxy − SFT | ρ | length |", "|---|---|---|---|---|---|---|---|---|"]
        for curve_name, curve in runs.items():
            tables += trajectory_rows(curve_name.split("/", 1)[1], curve)
        tables.append("")
        figure = os.path.join(folder, f"{name}.png")
        if plot(figure, name, proxy.description, bon, gold_bon, runs, fits):
            figures.append(figure)
            tables += [f"![{name}]({name}.png)", ""]
    lines += ["", "## Does gold turn down?", "",
              "In training order (the seed mean at each measurement); the drop is per seed, gold at the peak step minus gold at the last, "
              "mean ± 95% t interval. \"yes\" needs the interval above 0.", "",
              "| proxy | method | turns down? |", "|---|---|---|"] + verdicts
    lines += ["", "## Fits (gold − SFT against d; least squares, no intercept)", "",
              "Pooled: one fit on every point (all seeds). Intervals: 95%, over per-seed fits (t) for the optimisation runs, "
              "a bootstrap over prompts for Best-of-N.", "",
              "A fitted turn is one the data support: β's interval above 0 and the pooled fit's peak within the largest d reached. "
              "Peaks far beyond the range (β near 0) are not forecasts and are shown as such.", "",
              "| proxy | method | form | α (pooled) | α interval | β (pooled) | β interval | R² | fitted peak d (pooled) | per-seed / resampled fits that peak | largest d reached | fitted turn in range? |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, method, form, s, reached in fit_rows:
        f = s.pooled
        peak = "none (β ≤ 0)" if f.peak is None else f"{f.peak:.2f}" if f.peak <= 3 * reached else f"beyond 3x the range ({3 * reached:.1f})"
        lines.append(f"| {name} | {method} | {form} | {f.alpha:.4f} | {bracket(s.alpha)} | {f.beta:.4f} | {bracket(s.beta)} | {f.r2:.3f} | {peak} | {s.peak_words(reached)} | {reached:.2f} | "
                     f"{'yes' if s.turns_in_range(reached) else 'no'} |")
    lines += ["", "## Curves", ""] + tables + cost_table(cache or folder, results)
    path = os.path.join(folder, "results.md")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    # "results" too: the path under its first name (run.py puts the run results over it in its summary).
    return {"results": path, "results_md": path, "figures": figures, "fits": {(n, m): s.pooled for n, m, _, s, _ in fit_rows}}
