"""The defaults against TRL on three workloads, with repeats (issue 25 §3: defaults >= 3x TRL's pairs/s).

    PYTHONPATH=/tmp/trl_env python benchmarks/defaults_vs_trl.py                 # ~16 min on 2 idle cores
    PYTHONPATH=/tmp/trl_env python benchmarks/defaults_vs_trl.py --repeats 2 --workloads short
    python benchmarks/defaults_vs_trl.py --tiny                                  # dry run: the commands, not the numbers

For each workload it calls ``bench_algorithms.py`` once with ``dpo-defaults`` (no options: whatever a
user gets) and ``trl-dpo-nogc`` (TRL 1.16's DPOTrainer without gradient checkpointing, like ours)
``--repeats`` times each, in the balanced order A B B A A B ..., so a drift of the machine's speed
during the call (seen here: 10-30% from hour to hour) falls on both sides alike. Each run is a
fresh process on the same pairs and weights. Repeat i's ratio is ours_i / TRL_i; the table gives
the median ratio and the lowest and highest, i.e. the spread of repeats. The workloads:

* ``short``: 2-8 word prompts, 2-15 word completions, ``tiny-llama-32k`` (vocabulary 32,000);
* ``long-prompt``: 4-8 reviews before the opening to continue (~76 prompt tokens, ~8 per completion);
* ``88m``: the short workload on ``llama-88m`` (hidden 768, 12 layers), where the decoder's
  FLOPs dominate: the same model work on both sides leaves only padding and the shared prompt to win.

Writes ``--out`` (default runs/defaults-vs-trl-<UTC time>, git-ignored): one bench_algorithms JSON per
workload and ``table.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

OURS, TRL = "dpo-defaults", "trl-dpo-nogc"

# bench_algorithms.py arguments of each workload; step counts keep the whole call near 16 minutes.
WORKLOADS = {
    "short": ["--steps", "20", "--warmup", "3", "--examples", "512"],
    "long-prompt": ["--workload", "long-prompt", "--steps", "6", "--warmup", "2", "--examples", "512"],
    "88m": ["--model", "llama-88m", "--steps", "5", "--warmup", "2", "--examples", "128"],
}
TINY = ["--model", "embedded:tiny", "--examples", "40", "--batch-size", "4", "--steps", "1", "--warmup", "1"]


def balanced_order(repeats: int) -> list[str]:
    """A B, B A, A B, ...: each repeat is one run of each side, the first side alternating."""
    return [name for i in range(repeats) for name in ((OURS, TRL) if i % 2 == 0 else (TRL, OURS))]


def ratios(results: list[dict]) -> dict:
    """Per-repeat pairs/s of both sides and their ratios, from bench_algorithms' results in run order."""
    ours = [r["pairs_per_s"] for r in results if r["run"] == OURS]
    trl = [r["pairs_per_s"] for r in results if r["run"] == TRL]
    pairs = list(zip(ours, trl))
    per_repeat = [a / b for a, b in pairs]
    shared = [r.get("shared_fraction") for r in results if r["run"] == OURS]
    return {
        "ours": ours, "trl": trl, "ratios": per_repeat,
        "median": statistics.median(per_repeat) if per_repeat else None,
        "low": min(per_repeat, default=None), "high": max(per_repeat, default=None),
        "shared_fraction": shared[0] if shared else None,
    }


def row(name: str, summary: dict, bound: float) -> str:
    if summary["median"] is None:
        return f"| {name} | - | - | not measured (a side failed or TRL is missing) | - | - |"
    listed = ", ".join(f"{r:.2f}x" for r in summary["ratios"])
    met = "met" if summary["low"] >= bound else ("met by the median, not by every repeat" if summary["median"] >= bound else "**missed**")
    shared = "-" if summary["shared_fraction"] is None else f"{summary['shared_fraction']:.2f}"
    return (f"| {name} | {statistics.median(summary['ours']):.1f} | {statistics.median(summary['trl']):.1f} | "
            f"{summary['median']:.2f}x ({summary['low']:.2f}-{summary['high']:.2f}; {listed}) | {shared} | {met} |")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workloads", default=",".join(WORKLOADS), help=f"comma-separated subset of {', '.join(WORKLOADS)}")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each side per workload (default 3)")
    parser.add_argument("--bound", type=float, default=3.0, help="the target ratio (issue 25: 3.0)")
    parser.add_argument("--tiny", action="store_true", help="dry run on the embedded model, one step per run: checks the commands, not the speed")
    parser.add_argument("--out", default=None, help="output folder (default runs/defaults-vs-trl-<UTC time>)")
    args = parser.parse_args(argv)
    names = args.workloads.split(",")
    unknown = [n for n in names if n not in WORKLOADS]
    if unknown:
        parser.error(f"unknown workloads {unknown}; choose from {', '.join(WORKLOADS)}")
    out = args.out or os.path.join("runs", time.strftime("defaults-vs-trl-%Y%m%d-%H%M%S", time.gmtime()))
    os.makedirs(out, exist_ok=True)

    from benchmarks import bench_algorithms

    load_before, began = open("/proc/loadavg").read().split()[:3], time.perf_counter()
    summaries = {}
    for name in names:
        extra = WORKLOADS[name] if not args.tiny else TINY + (["--workload", "long-prompt"] if name == "long-prompt" else [])
        path = os.path.join(out, f"{name}.json")
        started = time.perf_counter()
        bench_algorithms.main(extra + ["--runs", ",".join(balanced_order(args.repeats)), "--out", path])
        with open(path) as f:
            summaries[name] = ratios(json.load(f)["results"])
        print(f"[{name}: {time.perf_counter() - started:.0f} s]", flush=True)

    lines = [
        f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} with `python benchmarks/defaults_vs_trl.py {' '.join(argv if argv is not None else sys.argv[1:])}`".rstrip()
        + f" in {time.perf_counter() - began:.0f} s; load average before {' / '.join(load_before)}, after {' / '.join(open('/proc/loadavg').read().split()[:3])}.",
        "",
        f"| workload | `{OURS}` pairs/s (median) | `{TRL}` pairs/s (median) | ratio: median (lowest-highest; each repeat) | batches shared | >= {args.bound:g}x |",
        "|---|---:|---:|---|---:|---|",
    ] + [row(name, summaries[name], args.bound) for name in names]
    table = "\n".join(lines)
    with open(os.path.join(out, "table.md"), "w") as f:
        f.write(table + "\n")
    print("\n" + table)
    return summaries


if __name__ == "__main__":
    main()
