"""results.md and the figures of the over-optimisation study, from the cached pieces."""

from __future__ import annotations

import math
import os

import numpy as np

from experiments.overoptimization.evaluate import spearman
from experiments.overoptimization.fits import Fit, analytic_bon_kl, best_of_n_by_proxy, fit
from experiments.overoptimization.plan import Budget

MARKERS = {"bon": "o", "bond": "s", "online_dpo": "^", "offline_dpo": "v", "rloo": "D", "grpo": "P", "ppo": "*"}


def bon_curve(pool: dict, proxy: str, ns: tuple[int, ...], selector: str | None = None) -> list[dict]:
    """Best-of-N selected by ``selector`` (default the proxy): gold and proxy of the pick, KL = log N - (N-1)/N."""
    gold, scores = np.array(pool["gold"]), np.array(pool[proxy])
    by = np.array(pool[selector or proxy])
    rows = []
    for n in ns:
        g, _ = best_of_n_by_proxy(by, gold, n)
        p, _ = best_of_n_by_proxy(by, scores, n)
        kl = analytic_bon_kl(n)
        rows.append({"n": n, "kl": kl, "d": math.sqrt(kl), "gold": g, "proxy": p})
    return rows


def run_points(result: dict, proxy: str) -> list[dict]:
    """A run's measurements relative to its start (step 0 = the SFT model): d = sqrt(max(KL, 0))."""
    points = result["points"]
    start = points[0]
    return [{"step": p["step"], "kl": p["kl"], "d": math.sqrt(max(p["kl"], 0.0)), "gold": p["gold"] - start["gold"], "proxy": p[f"proxy/{proxy}"] - start[f"proxy/{proxy}"],
             "gold_abs": p["gold"], "spearman": p[f"spearman/{proxy}"]} for p in points]


def try_fit(form: str, d: list[float], r: list[float]) -> Fit | None:
    try:
        return fit(form, np.array(d), np.array(r))
    except ValueError:
        return None


def turn_down(points: list[dict]) -> str:
    """Whether gold falls from its best while the proxy keeps rising, in training order (the sampled KL
    of one measurement is too noisy to order the points by), in words with the numbers."""
    best = max(range(len(points)), key=lambda i: points[i]["gold"])
    last = points[-1]
    if best == len(points) - 1:
        return f"no: gold is highest at the last step ({last['step']}, d = {last['d']:.2f})"
    peak = points[best]
    drop, rise = peak["gold"] - last["gold"], last["proxy"] - peak["proxy"]
    return (f"gold peaks at step {peak['step']} (d = {peak['d']:.2f}, {peak['gold']:+.3f}); at step {last['step']} (d = {last['d']:.2f}) it is {drop:.3f} lower "
            f"while the proxy is {abs(rise):.3f} {'higher' if rise > 0 else 'lower'}")


def plot(path: str, proxy: str, description: str, bon: list[dict], gold_bon: list[dict], runs: dict[str, list[dict]], fits: dict[str, Fit]) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("overoptimization: matplotlib is missing (pip install 'lit_align[plot]'); skipping the figures")
        return False
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.6), dpi=80)
    colours = {}
    series = [("bon", "Best-of-N (proxy picks)", bon)] + [(name, name, pts) for name, pts in runs.items()]
    for name, label, pts in series:
        method = name.split("/")[0]
        d = [p["d"] for p in pts]
        line = left.plot(d, [p["gold"] for p in pts], MARKERS.get(method, "x") + "-", ms=4, lw=0.8, label=label, alpha=0.85)[0]
        colours[name] = line.get_color()
        right.plot(d, [p["proxy"] for p in pts], MARKERS.get(method, "x") + "-", ms=4, lw=0.8, color=line.get_color(), alpha=0.85)
    left.plot([p["d"] for p in gold_bon], [p["gold"] for p in gold_bon], "k:", lw=1, label="Best-of-N (gold picks)")
    for method, f in fits.items():
        grid = np.linspace(0, max(max(p["d"] for p in pts) for name, _, pts in series if name.split("/")[0] == method or (method == "bon" and name == "bon")), 50)
        left.plot(grid, f(grid), "--", lw=1, color="grey")
    left.set(xlabel="d = sqrt(KL(pi || SFT))", ylabel="gold reward - SFT's", title="gold (lexicon)")
    right.set(xlabel="d = sqrt(KL(pi || SFT))", ylabel="proxy reward - SFT's", title=f"proxy {proxy}")
    left.legend(fontsize=6, loc="best")
    fig.suptitle(f"{proxy}: {description} (dashed: fits)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


def cost_table(folder: str, results: dict) -> list[str]:
    """Wall and CPU seconds of every piece, as measured when it ran (from the cache files)."""
    import json

    rows = []
    done = os.path.join(folder, "done")
    for file in sorted(os.listdir(done)) if os.path.isdir(done) else []:
        with open(os.path.join(done, file)) as f:
            piece = json.load(f)
        cpu = piece.get("cpu_seconds")
        rows.append(f"| {file[:-5]} | {piece['seconds']:.0f} | {'' if cpu is None else f'{cpu:.0f}'} |")
    rows += [f"| {name} | {r['wall_seconds']:.0f} | {r['cpu_seconds']:.0f} |" for name, r in sorted(results.items())]
    if not rows:
        return []
    return ["## Cost of each piece (as measured when it ran)", "",
            "Wall time depends on what else the machine ran; CPU time (this process's threads) much less so. Blank CPU: not recorded for that piece.", "",
            "| piece | wall (s) | CPU (s) |", "|---|---|---|"] + rows + [""]


def write_report(folder: str, budget: Budget, quality: dict, pool: dict, dpo_info: dict, results: dict, command: str, machine: str, cache: str | None = None) -> dict:
    """``cache``: the study's output folder (its done/ files give the cost table); default ``folder``."""
    os.makedirs(folder, exist_ok=True)
    gold_all = np.array(pool["gold"]).ravel()
    lines = ["# Reward over-optimisation on the embedded task (gold reward known)", "",
             f"Command: `{command}`. {machine}.", "",
             "Gold = the embedded task's lexicon reward (`LexiconSentimentReward`); proxies = Bradley–Terry reward models "
             "(`configs/reward_model.yaml`) trained on pairs of SFT samples labelled by gold. Rewards are reported relative to "
             "the SFT start (step 0 of every run; N = 1 for Best-of-N); d = sqrt(KL(pi || SFT)). Best-of-N uses "
             f"KL = log N - (N-1)/N and the unbiased all-subsets estimator on {budget.bon_pool} SFT samples per prompt; the "
             f"RL-like runs are measured every {budget.eval_every} of {budget.steps} steps on {budget.eval_prompts} held-out prompts "
             f"x {budget.samples_per_prompt} samples (sampled KL estimate; its standard error makes small KL values noisy, "
             "and d uses max(KL, 0)).", "",
             "## Proxies", "",
             "| proxy | what | held-out pair accuracy | Spearman vs gold, SFT samples | offline-DPO pairs: proxy agrees with gold |",
             "|---|---|---|---|---|"]
    for proxy in budget.proxies:
        q, info = quality[proxy.name], dpo_info[proxy.name]
        rho = spearman(np.array(pool[proxy.name]).ravel(), gold_all)
        lines.append(f"| {proxy.name} | {proxy.description} | {q['accuracy']:.3f} (n = {q['heldout_pairs']}) | {rho:.3f} (n = {gold_all.size}) | "
                     f"{info['gold_agreement']:.3f} of {info['gold_decided']} pairs with a gold preference ({info['pairs']} pairs) |")
    figures, fit_rows, tables = [], [], []
    for proxy in budget.proxies:
        name = proxy.name
        bon = bon_curve(pool, name, budget.bon_ns)
        gold_bon = bon_curve(pool, name, budget.bon_ns, selector="gold")
        base, gbase = bon[0], gold_bon[0]
        bon_rel = [{**b, "gold": b["gold"] - base["gold"], "proxy": b["proxy"] - base["proxy"]} for b in bon]
        gold_rel = [{**b, "gold": b["gold"] - gbase["gold"]} for b in gold_bon]
        runs = {r.split("/", 1)[1]: run_points(v, name) for r, v in sorted(results.items()) if r.startswith(name + "/")}
        fits = {}
        f = try_fit("bon", [b["d"] for b in bon_rel], [b["gold"] for b in bon_rel])
        if f:
            fits["bon"] = f
            fit_rows.append((name, "Best-of-N", "d(α − βd)", f, bon_rel))
        for method in dict.fromkeys(k.split("/")[0] for k in runs):
            pts = [p for k, v in runs.items() if k.split("/")[0] == method for p in v]
            f = try_fit("rl", [p["d"] for p in pts], [p["gold"] for p in pts])
            if f:
                fits[method] = f
                fit_rows.append((name, method, "d(α − β log d)", f, pts))
        tables += [f"### {name}", "", "Best-of-N against the proxy (gold picks: the same N, chosen by gold itself).", "",
                   "| N | KL | d | gold − SFT | proxy − SFT | gold − SFT if gold picked |", "|---|---|---|---|---|---|"]
        tables += [f"| {b['n']} | {b['kl']:.3f} | {b['d']:.3f} | {b['gold']:+.4f} | {b['proxy']:+.4f} | {g['gold']:+.4f} |" for b, g in zip(bon_rel, gold_rel)]
        tables += ["", "RL-like runs (every measurement): step, KL, gold − SFT, proxy − SFT, Spearman(proxy, gold) on that step's samples.", "",
                   "| run | turns down? | trajectory (step: KL / gold / proxy / ρ) |", "|---|---|---|"]
        for run, pts in runs.items():
            traj = "; ".join(f"{p['step']}: {p['kl']:.2f} / {p['gold']:+.3f} / {p['proxy']:+.3f} / {p['spearman']:.2f}" for p in pts)
            tables.append(f"| {run} | {turn_down(pts)} | {traj} |")
        tables.append("")
        figure = os.path.join(folder, f"{name}.png")
        if plot(figure, name, proxy.description, bon_rel, gold_rel, runs, fits):
            figures.append(figure)
            tables += [f"![{name}]({name}.png)", ""]
    lines += ["", "## Fits (gold − SFT against d; least squares, no intercept)", "",
              "| proxy | method | form | α | β | R² | points | fitted peak d | largest d reached |", "|---|---|---|---|---|---|---|---|---|"]
    for name, method, form, f, pts in fit_rows:
        peak = "none (β ≤ 0)" if f.peak is None else f"{f.peak:.2f}"
        lines.append(f"| {name} | {method} | {form} | {f.alpha:.4f} | {f.beta:.4f} | {f.r2:.3f} | {f.points} | {peak} | {max(p['d'] for p in pts):.2f} |")
    lines += ["", "## Curves", ""] + tables + cost_table(cache or folder, results)
    path = os.path.join(folder, "results.md")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    # "results" too: the path under its first name (run.py puts the run results over it in its summary).
    return {"results": path, "results_md": path, "figures": figures, "fits": {(n, m): f for n, m, _, f, _ in fit_rows}}
