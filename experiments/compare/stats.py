"""Statistics of the comparison: confidence intervals over seeds, reward at matched KL, dominance.

* **Confidence intervals** are Student-t 95% intervals of the mean over seeds: mean ± t(0.975, n−1) ·
  sd / √n. Seeds are the unit (each seed draws its own data, held-out prompts and sampling), so the
  interval covers what a rerun with new seeds would vary, not only evaluation noise.
* **Reward at matched KL** (as the DPO paper's Fig. 2 and Gao et al. compare): a run's evaluations
  (KL, reward) along training, from the start (KL 0) to its final point, form a curve; the reward at
  KL = k is interpolated linearly on the first segment that reaches k. A method's frontier at k, for
  one seed, is the best of its strength settings that reach k (the upper envelope of its sweep).
  A seed whose runs never reach k contributes nothing there, and the tables say how many seeds did.
* **Dominance** of A over B at k: the paired difference of their frontiers over the seeds where both
  reach k (same seed, same data and prompts), with its t interval: A > B when the interval lies
  above 0. A dominates B's frontier when A > B at every matched KL both reach, and at least one.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from typing import Iterable

# t(0.975, df) for df = 1..10; beyond, the Cornish-Fisher expansion around z = 1.96 (error < 1e-3).
T_975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228)
Z_975 = 1.959964


def t_quantile(df: int) -> float:
    """The 0.975 quantile of Student's t with ``df`` degrees of freedom."""
    if df <= len(T_975):
        return T_975[df - 1]
    z = Z_975
    return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)


def mean_ci(values: Iterable[float]) -> tuple[float, float | None, int]:
    """(mean, half-width of the Student-t 95% interval or None for one value, n)."""
    values = [v for v in values if v is not None and not math.isnan(v)]
    if not values:
        return float("nan"), None, 0
    if len(values) == 1:
        return values[0], None, 1
    return statistics.fmean(values), t_quantile(len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values)), len(values)


def fmt_ci(mean: float, half: float | None, digits: int = 3) -> str:
    if math.isnan(mean):
        return "—"
    return f"{mean:.{digits}f}" + (f" ± {half:.{digits}f}" if half is not None else "")


def reward_at_kl(trajectory: list[tuple[int, float, float]], kl: float, start_kl: float = 0.0) -> float | None:
    """Reward where the run's curve of (step, KL, reward) evaluations first reaches ``kl``, linear
    between evaluations; the first evaluation's KL is taken as ``start_kl`` (the start model is the
    reference, so its true KL is 0 and the sampled estimate only adds noise). None if never reached."""
    points = [(start_kl if i == 0 else k, r) for i, (_, k, r) in enumerate(sorted(trajectory))]
    for (k0, r0), (k1, r1) in zip(points, points[1:]):
        if min(k0, k1) <= kl <= max(k0, k1):
            return r0 if k1 == k0 else r0 + (r1 - r0) * (kl - k0) / (k1 - k0)
    return None


def frontier(results: list[dict], method: str, kl: float) -> dict[int, float]:
    """Per seed, the best reward at ``kl`` over ``method``'s strength settings that reach it."""
    best: dict[int, float] = {}
    for r in results:
        if r["method"] != method:
            continue
        value = reward_at_kl(r["trajectory"], kl)
        if value is not None and (r["seed"] not in best or value > best[r["seed"]]):
            best[r["seed"]] = value
    return best


def bon_reward_at(kl: float, curve: list[dict]) -> float | None:
    """Best-of-N reward at ``kl`` on one seed's ``curve`` (linear between its points, KL = log N -
    (N-1)/N; its first point's reward below it); None past its last point."""
    points = sorted((b["kl"], b["reward"]) for b in curve)
    if kl > points[-1][0]:
        return None
    for (k0, r0), (k1, r1) in zip(points, points[1:]):
        if kl <= k1:
            return r0 + (r1 - r0) * (max(kl, k0) - k0) / (k1 - k0)
    return points[0][1]


def bon_frontier(curves: dict, kl: float) -> dict[int, float]:
    """Per seed, Best-of-N's reward at ``kl`` (``bon_reward_at``); none past N = max."""
    at = {int(seed): bon_reward_at(kl, curve) for seed, curve in curves.items()}
    return {seed: value for seed, value in at.items() if value is not None}


def paired_difference(a: dict[int, float], b: dict[int, float]) -> tuple[float, float | None, int]:
    """Mean and t half-width of a − b over the seeds both have."""
    return mean_ci(a[s] - b[s] for s in sorted(set(a) & set(b)))


def verdict(mean: float, half: float | None, n: int, a: str, b: str) -> str:
    if n < 2 or half is None:
        return f"{n} common seed(s): no interval"
    if mean - half > 0:
        return f"{a} > {b}"
    if mean + half < 0:
        return f"{b} > {a}"
    return "no significant difference"


def majority(seeds: int) -> int:
    """Seeds that must reach a KL for a method's band or marker to be drawn there, or for it to stand
    for its group (best online / best offline) there."""
    return max(1, (seeds + 1) // 2)


def dominance(curves_a: dict[float, dict[int, float]], curves_b: dict[float, dict[int, float]], a: str, b: str) -> tuple[list[tuple[float, float, float | None, int, str]], str]:
    """Per matched KL, (kl, mean difference a − b, half-width, seeds, verdict), and the overall statement."""
    rows = []
    for kl in sorted(curves_a):
        mean, half, n = paired_difference(curves_a[kl], curves_b.get(kl, {}))
        if n:
            rows.append((kl, mean, half, n, verdict(mean, half, n, a, b)))
    judged = [row[4] for row in rows if "seed" not in row[4]]
    if not judged:
        overall = f"{a} and {b} never reach a common KL on 2 or more common seeds"
    elif all(v == f"{a} > {b}" for v in judged):
        overall = f"{a} dominates {b} at every matched KL both reach ({', '.join(f'{row[0]:g}' for row in rows)})"
    elif all(v == f"{b} > {a}" for v in judged):
        overall = f"{b} dominates {a} at every matched KL both reach ({', '.join(f'{row[0]:g}' for row in rows)})"
    else:
        counts = defaultdict(int)
        for v in judged:
            counts[v] += 1
        overall = "neither dominates: " + ", ".join(f"{v} at {n} KL value(s)" for v, n in counts.items())
    return rows, overall
