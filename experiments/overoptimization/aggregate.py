"""Seeds into curves: mean trajectories with intervals, whether gold turns down, fits with uncertainty.

* **Baseline.** Every run starts from the same SFT model, so "the SFT start" is the mean of all runs'
  step-0 measurements (each drawn with its own seed's evaluation samples). Rewards are reported
  relative to it; d = sqrt(max(KL, 0)) per run and step (the sampled KL can be slightly negative).
* **Intervals** are Student-t 95% intervals over seeds (``experiments.compare.stats.mean_ci``); the
  seed draws the run's data order, sampling and its evaluation samples.
* **Turn-down.** The step where the seed-mean gold is highest; if that is not the last measurement,
  the per-seed drop gold(peak step) - gold(last step) with its interval. "Yes" needs the interval
  above 0. The peak step is chosen on the same data, which biases the drop upwards; the interval
  guards against noise at the chosen step, not against that choice.
* **Fits with uncertainty.** Gao et al.'s RL form is fitted to each seed's trajectory (interval of
  alpha and beta over seeds) and to all seeds' points at once (the curve drawn). Best-of-N is one
  pool of SFT samples, so its uncertainty is a bootstrap over the held-out prompts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from experiments.compare.stats import mean_ci
from experiments.overoptimization.fits import Fit, analytic_bon_kl, best_of_n_by_proxy, fit


def curve_of(run_name: str) -> str:
    """'<proxy>/<method>/<symbol>=<value>/seed=<s>' -> '<proxy>/<method>/<symbol>=<value>'."""
    return run_name.rsplit("/seed=", 1)[0]


def study_start(results: dict) -> dict[str, float]:
    """The mean step-0 measurement over every run (each key: gold, proxy/<name>, ...)."""
    starts = [r["points"][0] for r in results.values()]
    return {key: float(np.mean([s[key] for s in starts])) for key in starts[0] if key not in ("step", "kl", "length") and not key.startswith("spearman/")}


def relative(points: list[dict], proxy: str, start: dict[str, float]) -> list[dict]:
    """A run's measurements relative to the SFT start: step, kl, d, gold, proxy, spearman."""
    return [{"step": p["step"], "kl": p["kl"], "d": math.sqrt(max(p["kl"], 0.0)), "gold": p["gold"] - start["gold"],
             "proxy": p[f"proxy/{proxy}"] - start[f"proxy/{proxy}"], "spearman": p[f"spearman/{proxy}"], "length": p.get("length", float("nan"))}
            for p in points]


@dataclass
class Curve:
    """One (proxy, method, strength): its seeds' relative trajectories, and their mean with intervals per step."""

    name: str
    seeds: list[list[dict]]

    @property
    def method(self) -> str:
        return self.name.split("/")[1]

    @property
    def steps(self) -> list[int]:
        common = set.intersection(*({p["step"] for p in s} for s in self.seeds))
        return sorted(common)

    def at(self, step: int, key: str) -> list[float]:
        return [p[key] for s in self.seeds for p in s if p["step"] == step]

    def mean(self) -> list[dict]:
        """Per step: n seeds, and (mean, half-width) of d, kl, gold, proxy, spearman."""
        rows = []
        for step in self.steps:
            row = {"step": step}
            for key in ("d", "kl", "gold", "proxy", "spearman", "length"):
                m, half, n = mean_ci(self.at(step, key))
                row[key], row[key + "_ci"], row["n"] = m, half, n
            rows.append(row)
        return rows


def curves(results: dict, proxy: str, start: dict[str, float]) -> dict[str, Curve]:
    grouped: dict[str, list[list[dict]]] = {}
    for name in sorted(results):
        if name.startswith(proxy + "/"):
            grouped.setdefault(curve_of(name), []).append(relative(results[name]["points"], proxy, start))
    return {name: Curve(name, seeds) for name, seeds in grouped.items()}


def highest(points: list[dict]) -> int:
    """Index of the highest gold in ``points`` (training steps, or Best-of-N's N in order)."""
    return max(range(len(points)), key=lambda i: points[i]["gold"])


def bracket(pair: tuple[float, float]) -> str:
    return f"[{pair[0]:.3f}, {pair[1]:.3f}]"


@dataclass
class TurnDown:
    verdict: str  # "yes", "no" (highest at the last measurement) or "not measurably"
    peak_step: int
    last_step: int
    peak_d: tuple[float, float | None]
    last_d: tuple[float, float | None]
    drop: tuple[float, float | None, int]  # per-seed gold(peak) - gold(last): mean, half-width, seeds
    proxy_change: tuple[float, float | None, int]  # per-seed proxy(last) - proxy(peak)

    def words(self) -> str:
        if self.verdict == "no":
            return f"no: gold is highest at the last measurement (step {self.last_step}, d = {self.last_d[0]:.2f})"
        drop, half, _ = self.drop
        interval = f"{drop:.3f} ± {half:.3f}" if half is not None else f"{drop:.3f}"
        proxy, phalf, _ = self.proxy_change
        rise = f"{proxy:+.3f}" + (f" ± {phalf:.3f}" if phalf is not None else "")
        head = "yes" if self.verdict == "yes" else "not measurably"
        return (f"{head}: gold peaks at step {self.peak_step} (d = {self.peak_d[0]:.2f}) and is {interval} lower at step {self.last_step} "
                f"(d = {self.last_d[0]:.2f}) while the proxy changes by {rise}")


def turn_down(curve: Curve) -> TurnDown:
    mean = curve.mean()
    best = highest(mean)
    peak, last = mean[best], mean[-1]
    drops = [a - b for a, b in zip(curve.at(peak["step"], "gold"), curve.at(last["step"], "gold"))]
    rises = [b - a for a, b in zip(curve.at(peak["step"], "proxy"), curve.at(last["step"], "proxy"))]
    drop = mean_ci(drops)
    if best == len(mean) - 1:
        verdict = "no"
    else:
        verdict = "yes" if drop[1] is not None and drop[0] - drop[1] > 0 else "not measurably"
    return TurnDown(verdict, peak["step"], last["step"], (peak["d"], peak["d_ci"]), (last["d"], last["d_ci"]), drop, mean_ci(rises))


@dataclass
class FitSummary:
    """The fit on every point, and the spread of its coefficients (over seeds, or a bootstrap)."""

    pooled: Fit
    alpha: tuple[float, float]  # 95% interval
    beta: tuple[float, float]
    how: str
    peaks: list[float | None]  # per seed (RL) or per bootstrap resample (Best-of-N), None: no peak

    def peak_words(self, reached: float) -> str:
        """How many per-seed fits (or resamples) peak, and how many of those inside the measured range."""
        found = [p for p in self.peaks if p is not None]
        inside = [p for p in found if p <= reached]
        unit = "seeds" if self.how.startswith("seeds") else "resamples"
        return f"{len(found)}/{len(self.peaks)} {unit}, {len(inside)} inside the range" + (f" (median d = {float(np.median(inside)):.2f})" if inside else "")

    def turns_in_range(self, reached: float) -> bool:
        """A fitted turn-down the data support: beta's interval above 0 and the pooled peak within the d reached."""
        return self.beta[0] > 0 and self.pooled.peak is not None and self.pooled.peak <= reached


def _interval(values: list[float]) -> tuple[float, float]:
    m, half, _ = mean_ci(values)
    return (m - half, m + half) if half is not None else (m, m)


def fit_rl(curve: Curve) -> FitSummary | None:
    """Gao et al.'s RL form d (alpha - beta log d) on all points, and on each seed (t interval over seeds)."""
    points = [p for s in curve.seeds for p in s]
    try:
        pooled = fit("rl", np.array([p["d"] for p in points]), np.array([p["gold"] for p in points]))
        per_seed = [fit("rl", np.array([p["d"] for p in s]), np.array([p["gold"] for p in s])) for s in curve.seeds]
    except ValueError:
        return None
    return FitSummary(pooled, _interval([f.alpha for f in per_seed]), _interval([f.beta for f in per_seed]),
                      f"seeds (t interval over {len(per_seed)} per-seed fits)", [f.peak for f in per_seed])


def bon_curve(pool: dict, proxy: str, ns: tuple[int, ...], selector: str | None = None, rows: np.ndarray | None = None) -> list[dict]:
    """Best-of-N picked by ``selector`` (default the proxy) on the pool's prompts ``rows`` (default all):
    gold and proxy of the pick, KL = log N - (N-1)/N, relative to N = 1."""
    gold, scores = np.array(pool["gold"]), np.array(pool[proxy])
    by = np.array(pool[selector or proxy])
    if rows is not None:
        gold, scores, by = gold[rows], scores[rows], by[rows]
    out = []
    for n in ns:
        kl = analytic_bon_kl(n)
        out.append({"n": n, "kl": kl, "d": math.sqrt(kl), "gold": best_of_n_by_proxy(by, gold, n)[0], "proxy": best_of_n_by_proxy(by, scores, n)[0]})
    base = out[0]
    return [{**r, "gold": r["gold"] - base["gold"], "proxy": r["proxy"] - base["proxy"]} for r in out]


def fit_bon(pool: dict, proxy: str, ns: tuple[int, ...], resamples: int = 200, seed: int = 0) -> tuple[FitSummary | None, tuple[float, float]]:
    """Gao et al.'s Best-of-N form on the pool, a percentile bootstrap over prompts for its coefficients,
    and the bootstrap interval of the drop gold(best N) - gold(largest N) at the full pool's best N."""
    curve = bon_curve(pool, proxy, ns)
    d = np.array([r["d"] for r in curve])
    try:
        pooled = fit("bon", d, np.array([r["gold"] for r in curve]))
    except ValueError:
        return None, (float("nan"), float("nan"))
    best = highest(curve)
    rng = np.random.default_rng(seed)
    prompts = len(pool["gold"])
    alphas, betas, peaks, drops = [], [], [], []
    for _ in range(resamples):
        rows = rng.integers(0, prompts, prompts)
        again = bon_curve(pool, proxy, ns, rows=rows)
        f = fit("bon", d, np.array([r["gold"] for r in again]))
        alphas.append(f.alpha), betas.append(f.beta), peaks.append(f.peak)
        drops.append(again[best]["gold"] - again[-1]["gold"])
    alpha, beta = np.percentile(alphas, [2.5, 97.5]), np.percentile(betas, [2.5, 97.5])
    summary = FitSummary(pooled, (float(alpha[0]), float(alpha[1])), (float(beta[0]), float(beta[1])), f"bootstrap over {prompts} prompts ({resamples} resamples)", peaks)
    return summary, tuple(float(x) for x in np.percentile(drops, [2.5, 97.5]))


def bon_turn_down(curve: list[dict], drop: tuple[float, float]) -> str:
    """Best-of-N's answer to "does gold turn down?", in words: ``curve`` from ``bon_curve``, ``drop``
    ``fit_bon``'s bootstrap interval of gold(best N) - gold(largest N). "yes" needs it above 0."""
    i = highest(curve)
    best, last = curve[i], curve[-1]
    if i == len(curve) - 1:
        return f"no: gold is highest at the largest N ({last['n']}, d = {last['d']:.2f})"
    measured = "yes" if drop[0] > 0 else "not measurably"
    return (f"{measured}: gold peaks at N = {best['n']} (d = {best['d']:.2f}) and is {best['gold'] - last['gold']:.3f} "
            f"(95% bootstrap {bracket(drop)}) lower at N = {last['n']}")
