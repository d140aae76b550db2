"""results.md of the comparison, generated entirely from the runs (hand-written findings live in
FINDINGS.md, which cites these numbers): reward at matched KL, dominance, final points, cost,
evaluation noise, every run and the Best-of-N curves. Intervals: ``stats`` (Student-t, 95%, over seeds)."""

from __future__ import annotations

import math
from collections import defaultdict

from experiments.compare.report import gap_to_best_of_n
from experiments.compare.stats import bon_frontier, dominance, fmt_ci, frontier, majority, mean_ci

# The KL values (nats) every method is compared at.
MATCHED_KL = (0.25, 0.5, 1.0, 2.0, 4.0)
OFFLINE = ("sft", "dpo", "cdpo", "ipo", "kto", "orpo")
ONLINE = ("bond", "jbond", "online_dpo", "rloo", "grpo", "ppo")
BEST_OF_N = "Best-of-N"
# The evaluation-noise target of issue 22: SE(KL) under 5% of KL at the final point.
NOISE_TARGET = 0.05


def methods_of(results: list[dict]) -> list[str]:
    return list(dict.fromkeys(r["method"] for r in results))


def matched(results: list[dict], curves: dict) -> dict[str, dict[float, dict[int, float]]]:
    """method (and Best-of-N) -> KL -> seed -> frontier reward at that KL."""
    table = {m: {kl: frontier(results, m, kl) for kl in MATCHED_KL} for m in methods_of(results)}
    if curves:
        table[BEST_OF_N] = {kl: bon_frontier(curves, kl) for kl in MATCHED_KL}
    return table


def group_seeds(seeds: int) -> int:
    """Seeds a method must reach a KL on to stand for its group there: most of them, and at least 2
    for an interval."""
    return max(2, majority(seeds))


def group_best(table: dict, group: tuple[str, ...], seeds: int) -> tuple[dict[float, dict[int, float]], dict[float, str]]:
    """Per KL, the frontier of the group's method with the highest mean there, among the methods most
    seeds reach at that KL (the rule frontier.png draws markers by), and which method that was.
    Without the rule a method only 2 of 5 seeds reach could stand for its group, on those 2 seeds."""
    out, chosen = {}, {}
    for kl in MATCHED_KL:
        candidates = [(mean_ci(table[m][kl].values())[0], m) for m in group if m in table and len(table[m][kl]) >= group_seeds(seeds)]
        if candidates:
            chosen[kl] = max(candidates)[1]
            out[kl] = table[chosen[kl]][kl]
    return out, chosen


def matched_section(table: dict, seeds: int) -> list[str]:
    lines = ["## Reward at matched KL", "",
             f"Ground-truth reward at KL(π ‖ SFT) = k nats, mean ± 95% Student-t half-width over the seeds that reach k (count in brackets, of {seeds}). "
             "Each run's curve runs through its evaluations (start, every few steps, the large final one), linear in between; a method's value "
             "for a seed is the best of its strength settings at k (experiments/compare/stats.py). Best-of-N: the SFT start's curve, "
             "KL = log N − (N−1)/N. '—': no seed reaches k.", "",
             "| method | " + " | ".join(f"KL = {kl:g}" for kl in MATCHED_KL) + " |", "|---|" + "---|" * len(MATCHED_KL)]
    for method, per_kl in table.items():
        cells = []
        for kl in MATCHED_KL:
            mean, half, n = mean_ci(per_kl[kl].values())
            cells.append("—" if n == 0 else f"{fmt_ci(mean, half)} ({n})")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return lines


def dominance_section(table: dict, seeds: int) -> list[str]:
    (online, online_by), (offline, offline_by) = group_best(table, ONLINE, seeds), group_best(table, OFFLINE, seeds)
    pairs = [("dpo", "ppo", table.get("dpo"), table.get("ppo")),
             ("bond", BEST_OF_N, table.get("bond"), table.get(BEST_OF_N)),
             ("best online", "best offline", online, offline)]
    chosen = {"best online": online_by, "best offline": offline_by}
    lines = ["## Which frontier dominates which", "",
             "Paired over seeds (the runs of one seed share its data and evaluation prompts): mean difference A − B of the frontiers at each matched KL with its 95% t interval. "
             f"'best online' / 'best offline': per KL, the method of the group with the highest mean there among those that at least {group_seeds(seeds)} "
             f"of the {seeds} seeds reach (named in brackets).", "",
             "| A | B | KL | A − B | seeds | verdict |", "|---|---|---|---|---|---|"]
    statements = []
    for a, b, curve_a, curve_b in pairs:
        if not curve_a or not curve_b:
            statements.append(f"- **{a} vs {b}:** not measured (a side has no runs).")
            continue
        rows, overall = dominance(curve_a, curve_b, a, b)
        name = lambda side, kl: f"{side} ({chosen[side][kl]})" if side in chosen else side  # noqa: E731
        lines += [f"| {name(a, kl)} | {name(b, kl)} | {kl:g} | {fmt_ci(mean, half)} | {n} | {verdict} |" for kl, mean, half, n, verdict in rows]
        statements.append(f"- **{a} vs {b}:** {overall}.")
    return lines + [""] + statements


def final_section(results: list[dict]) -> list[str]:
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for r in results:
        groups[(r["method"], r["label"])].append(r)
    lines = ["## Final point of each setting", "",
             "Mean ± 95% t half-width over seeds. SE(KL): standard error of the final sampled KL over prompts (mean over seeds). "
             "Δ BoN: final reward minus Best-of-N's at the same KL on the run's own seed's curve (blank past N = 64).", "",
             "| method | strength | seeds | reward | KL(π ‖ SFT) | SE(KL) | Δ BoN | length |", "|---|---|---|---|---|---|---|---|"]
    for (method, label), group in groups.items():
        gaps = [g["bon_gap"] for g in group]
        gap = fmt_ci(*mean_ci(gaps)[:2]) if None not in gaps else ""
        lines.append(f"| {method} | {label} | {len(group)} | {fmt_ci(*mean_ci(g['reward'] for g in group)[:2])} | {fmt_ci(*mean_ci(g['kl'] for g in group)[:2], 2)} "
                     f"| {mean_ci(g.get('kl_se', math.nan) for g in group)[0]:.3f} | {gap} | {mean_ci(g['length'] for g in group)[0]:.1f} |")
    return lines


def cost_section(results: list[dict], dataset_samples: int) -> list[str]:
    lines = ["## Cost per run", "",
             "Mean ± 95% t half-width over a method's runs. Samples drawn and reward queries are those of training (the online methods' "
             "`OnlineSampling` counters), not the evaluations." + (
                 " The offline methods (SFT, DPO, cDPO, IPO, KTO, ORPO) train on a dataset sampled from the SFT start and labelled by the same "
                 f"reward once per seed: {dataset_samples} samples and as many reward queries, shared by all of them and not in their CPU time."
                 # 0: no built-in offline method ran (a --method recipe's data is its own, and uncounted)
                 if dataset_samples else ""), "",
             "| method | runs | CPU seconds | wall seconds | samples drawn | reward queries | train tokens/s |", "|---|---|---|---|---|---|---|"]
    for method in methods_of(results):
        group = [r for r in results if r["method"] == method]
        cell = lambda key, digits=0: fmt_ci(*mean_ci(g.get(key, math.nan) for g in group)[:2], digits)  # noqa: E731
        lines.append(f"| {method} | {len(group)} | {cell('cpu_seconds', 1)} | {cell('wall_seconds', 1)} | {cell('samples_drawn')} | {cell('reward_queries')} | {cell('tokens_per_sec')} |")
    return lines


def noise_section(results: list[dict]) -> list[str]:
    lines = ["## Evaluation noise at the final point", "",
             f"Standard error of the sampled KL over held-out prompts, relative to the KL; the target is under {NOISE_TARGET:.0%}. "
             "Each run's final evaluation drew a second sample of held-out prompts when its first missed the target, sized from the first "
             "(`SampledEvaluation.second_draw_size`), up to a cap; 'prompts' is how many it took in all. "
             "Runs that barely moved (KL near 0) cannot meet a relative target with any affordable sample: the absolute SE is given too.", "",
             "| method | runs | SE(KL) / KL, median | max | runs under target | SE(KL), median (nats) | prompts, median (range) |", "|---|---|---|---|---|---|---|"]
    for method in methods_of(results):
        group = [r for r in results if r["method"] == method and not math.isnan(r.get("kl_se", math.nan))]
        if not group:
            continue
        ratios = sorted(r["kl_se"] / abs(r["kl"]) if r["kl"] else math.inf for r in group)
        ses = sorted(r["kl_se"] for r in group)
        prompts = sorted(final_prompts(r) for r in group)
        lines.append(f"| {method} | {len(group)} | {ratios[len(ratios) // 2]:.1%} | {ratios[-1]:.1%} | {sum(x < NOISE_TARGET for x in ratios)}/{len(group)} | {ses[len(ses) // 2]:.3f} "
                     f"| {prompts[len(prompts) // 2]:.0f} ({prompts[0]:.0f}–{prompts[-1]:.0f}) |")
    return lines


def final_prompts(result: dict) -> float:
    """Held-out prompts of a run's final evaluation (``eval/prompts``; NaN for runs from before it was logged)."""
    return result.get("eval_prompts", math.nan)


def runs_section(results: list[dict]) -> list[str]:
    lines = ["## Every run", "", "| run | steps | start reward | final reward | final KL | SE(KL) | final prompts | Δ BoN (own seed) | length | wall (s) | CPU (s) | samples drawn |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        gap = "" if r["bon_gap"] is None else f"{r['bon_gap']:+.3f}"
        lines.append(f"| `{r['run']}` | {r['steps']} | {r['start_reward']:.3f} | {r['reward']:.3f} | {r['kl']:.2f} | {r.get('kl_se', math.nan):.3f} | {final_prompts(r):.0f} | {gap} | {r['length']:.1f} "
                     f"| {r['wall_seconds']:.1f} | {r.get('cpu_seconds', math.nan):.1f} | {r.get('samples_drawn', math.nan):.0f} |")
    return lines


def curves_section(curves: dict) -> list[str]:
    seeds = sorted(curves, key=int)
    lines = ["## Best-of-N of the SFT start, per seed (reference curves)", "",
             "Each seed's curve is built on that seed's held-out prompts, from 64 samples per prompt. KL with ties: KL(Best-of-N ‖ SFT) of "
             "those samples with the tie-aware Best-of-N likelihood (`empirical_bon_kl`), below log N − (N−1)/N because tied rewards leave "
             "Best-of-N no choice.", "",
             "| N | log N − (N−1)/N | " + " | ".join(f"KL with ties (seed {s}) | r(N) (seed {s})" for s in seeds) + " |", "|---|---|" + "---|---|" * len(seeds)]
    for points in zip(*(curves[s] for s in seeds)):
        lines.append(f"| {points[0]['n']} | {points[0]['kl']:.3f} | " + " | ".join(f"{p.get('kl_ties', math.nan):.3f} | {p['reward']:.3f}" for p in points) + " |")
    return lines


def write_results(path: str, results: list[dict], curves: dict, failed: dict[str, str], header: str, dataset_samples: int = 0) -> dict:
    """results.md from the runs; returns the matched-KL table (method -> KL -> seed -> reward) for the figure."""
    for r in results:
        r["bon_gap"] = gap_to_best_of_n(r, curves)
    table = matched(results, curves)
    seeds = len({r["seed"] for r in results})
    sections = [[header], matched_section(table, seeds), dominance_section(table, seeds), final_section(results), cost_section(results, dataset_samples), noise_section(results), runs_section(results)]
    if curves:
        sections.append(curves_section(curves))
    if failed:
        sections.append(["## Runs without results (failed, or not run yet)", ""] + [f"- `{name}`: {error}" for name, error in failed.items()])
    with open(path, "w") as f:
        f.write("\n\n".join("\n".join(section) for section in sections) + "\n")
    return table
