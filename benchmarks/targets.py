"""The targets of issue 17 (section 4) against measurements: reads the ``--out`` JSON files of
``bench_algorithms.py`` written by ``run_tables.sh`` and prints one markdown table.

    python benchmarks/targets.py --short short.json --long long.json --memory memory.json

Each target is a ratio of two runs of the same JSON file (same process tree, same machine state):

* speed targets compare pairs/s with TRL's ``DPOTrainer`` without gradient checkpointing
  (``trl-dpo-nogc``; ours has it off by default too), on the short, variable-length workload;
  the precomputed-reference runs also show the ratio against TRL's own precomputed mode;
* the long-prompt target compares prefix sharing with the same run without it;
* the memory targets compare peak RSS at ~100M parameters (``llama-88m``) with TRL's live-reference
  run, and the precomputed row also with TRL's precomputed mode (which holds no reference either).

A target whose runs are missing (TRL not installed, a failed run) is reported as not measured.
"""

from __future__ import annotations

import argparse
import json
from typing import NamedTuple


class Target(NamedTuple):
    text: str
    workload: str  # which JSON file: short, long, memory
    run: str
    baseline: str
    metric: str  # pairs_per_s (higher is better) or peak_rss_mb (lower is better)
    bound: float
    also: str | None = None  # a second baseline shown for context


TARGETS = [
    Target("defaults >= 2.5x TRL's pairs/s (variable-length data)", "short", "dpo-defaults", "trl-dpo-nogc", "pairs_per_s", 2.5),
    Target("prefix sharing + grouping >= 3.5x TRL (live reference)", "short", "dpo-copy-grouped-shared", "trl-dpo-nogc", "pairs_per_s", 3.5),
    Target("prefix sharing + grouping >= 4.5x TRL (precomputed reference)", "short", "dpo-precomputed-grouped-shared", "trl-dpo-nogc", "pairs_per_s", 4.5, "trl-dpo-precomputed-nogc"),
    Target("long prompts: prefix sharing alone >= 1.5x unshared", "long", "dpo-copy-shared", "dpo-copy", "pairs_per_s", 1.5),
    Target("peak memory <= 0.9x TRL's at ~100M parameters (live reference)", "memory", "dpo-copy", "trl-dpo-nogc", "peak_rss_mb", 0.9),
    Target("peak memory <= 0.7x TRL's at ~100M parameters (precomputed reference)", "memory", "dpo-precomputed", "trl-dpo-nogc", "peak_rss_mb", 0.7, "trl-dpo-precomputed-nogc"),
]


def evaluate(target: Target, runs: dict[str, dict]) -> tuple[float | None, float | None, bool | None]:
    """(ratio, ratio against ``also``, met) from runs keyed by name; None where a run is missing."""
    ours, base = runs.get(target.run), runs.get(target.baseline)
    if ours is None or base is None:
        return None, None, None
    ratio = ours[target.metric] / base[target.metric]
    other = runs.get(target.also) if target.also else None
    also = ours[target.metric] / other[target.metric] if other else None
    met = ratio >= target.bound if target.metric == "pairs_per_s" else ratio <= target.bound
    return ratio, also, met


def _load(path: str | None) -> tuple[dict[str, dict], str]:
    if not path:
        return {}, ""
    with open(path) as f:
        data = json.load(f)
    command = "python benchmarks/bench_algorithms.py " + " ".join(data.get("command", [])[1:])
    return {r["run"]: r for r in data["results"]}, command


def table(paths: dict[str, str | None]) -> str:
    loaded = {name: _load(path) for name, path in paths.items()}
    lines = ["| target | measured | met | runs compared | command |", "|---|---:|---|---|---|"]
    for target in TARGETS:
        runs, command = loaded[target.workload]
        ratio, also, met = evaluate(target, runs)
        unit = "pairs/s" if target.metric == "pairs_per_s" else "peak RSS"
        if ratio is None:
            measured, verdict = "not measured", "-"
        else:
            measured = f"{ratio:.2f}x" + (f" ({also:.2f}x vs {target.also})" if also is not None else "")
            verdict = "**met**" if met else "**missed**"
        detail = f"{unit} of {target.run} / {target.baseline}"
        if ratio is not None:
            value = runs[target.run][target.metric], runs[target.baseline][target.metric]
            detail += f" ({value[0]:.1f} / {value[1]:.1f})" if target.metric == "pairs_per_s" else f" ({value[0]:.0f} / {value[1]:.0f} MB)"
        lines.append(f"| {target.text} | {measured} | {verdict} | {detail} | `{command}` |" if command else f"| {target.text} | {measured} | {verdict} | {detail} | - |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--short", help="bench_algorithms.py --out of the short (variable-length) workload")
    parser.add_argument("--long", help="... of --workload long-prompt")
    parser.add_argument("--memory", help="... of --model llama-88m")
    args = parser.parse_args()
    print(table({"short": args.short, "long": args.long, "memory": args.memory}))


if __name__ == "__main__":
    main()
