"""The benchmark helpers that turn measurements into claims: the targets table (benchmarks/targets.py),
the defaults-vs-TRL repeats (benchmarks/defaults_vs_trl.py) and the per-phase memory probe
(benchmarks/memory_profile.py). No timing: fixed inputs only."""

import json
import os
import sys

import pytest
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from benchmarks import defaults_vs_trl, targets  # noqa: E402
from benchmarks.memory_profile import Probe, tensor_bytes  # noqa: E402


def _write(path, runs: dict[str, dict]) -> str:
    with open(path, "w") as f:
        json.dump({"command": ["benchmarks/bench_algorithms.py", "--steps", "20"], "results": [{"run": name, **values} for name, values in runs.items()]}, f)
    return str(path)


def test_targets_compare_the_right_runs_and_directions(tmp_path):
    short = _write(tmp_path / "short.json", {
        "dpo-defaults": {"pairs_per_s": 25.0},  # 2.5x: exactly at the bound -> met
        "dpo-copy-grouped-shared": {"pairs_per_s": 34.0},  # 3.4x < 3.5x -> missed
        "dpo-precomputed-grouped-shared": {"pairs_per_s": 50.0},  # 5.0x vs live TRL, 2.5x vs TRL precomputed
        "trl-dpo-nogc": {"pairs_per_s": 10.0},
        "trl-dpo-precomputed-nogc": {"pairs_per_s": 20.0},
    })
    long = _write(tmp_path / "long.json", {"dpo-copy": {"pairs_per_s": 4.0}, "dpo-copy-shared": {"pairs_per_s": 5.0}})  # 1.25x: missed
    memory = _write(tmp_path / "memory.json", {
        "dpo-copy": {"peak_rss_mb": 2700.0},  # 0.9x: at the bound -> met (lower is better)
        "dpo-precomputed": {"peak_rss_mb": 2400.0},  # 0.8x > 0.7x -> missed
        "trl-dpo-nogc": {"peak_rss_mb": 3000.0},
    })
    rows = targets.table({"short": short, "long": long, "memory": memory}).splitlines()[2:]
    assert len(rows) == len(targets.TARGETS) == 6
    cells = [[c.strip() for c in row.split("|")[1:-1]] for row in rows]
    assert [c[1] for c in cells] == ["2.50x", "3.40x", "5.00x (2.50x vs trl-dpo-precomputed-nogc)", "1.25x", "0.90x", "0.80x"]
    assert [c[2] for c in cells] == ["**met**", "**missed**", "**met**", "**missed**", "**met**", "**missed**"]
    assert cells[5][3] == "peak RSS of dpo-precomputed / trl-dpo-nogc (2400 / 3000 MB)"
    assert cells[0][4] == "`python benchmarks/bench_algorithms.py --steps 20`"


def test_targets_without_trl_runs_are_not_measured(tmp_path):
    short = _write(tmp_path / "short.json", {"dpo-defaults": {"pairs_per_s": 25.0}})
    rows = targets.table({"short": short, "long": None, "memory": None}).splitlines()[2:]
    assert all("| not measured | - |" in row for row in rows)


def test_defaults_vs_trl_pairs_each_repeat_in_balanced_order():
    order = defaults_vs_trl.balanced_order(3)
    assert order == ["dpo-defaults", "trl-dpo-nogc", "trl-dpo-nogc", "dpo-defaults", "dpo-defaults", "trl-dpo-nogc"]
    speeds = {"dpo-defaults": iter([30.0, 36.0, 27.0]), "trl-dpo-nogc": iter([10.0, 9.0, 12.0])}
    results = [{"run": name, "pairs_per_s": next(speeds[name]), **({"shared_fraction": 0.5} if name == "dpo-defaults" else {})} for name in order]
    summary = defaults_vs_trl.ratios(results)
    assert summary["ratios"] == pytest.approx([3.0, 4.0, 2.25])  # repeat i: ours_i / TRL_i
    assert (summary["median"], summary["low"], summary["high"]) == pytest.approx((3.0, 2.25, 4.0))
    assert summary["shared_fraction"] == 0.5
    # The verdict needs every repeat at the bound; the median alone is said as such.
    assert defaults_vs_trl.row("short", summary, 3.0).endswith("| 0.50 | met by the median, not by every repeat |")
    assert defaults_vs_trl.row("short", summary, 2.0).endswith("| met |")
    assert defaults_vs_trl.row("short", summary, 3.5).endswith("| **missed** |")
    assert "not measured" in defaults_vs_trl.row("long", defaults_vs_trl.ratios([]), 3.0)


def test_tensor_bytes_counts_shared_storage_once():
    weight = torch.zeros(1000, 10)
    tied = torch.nn.Linear(10, 1000, bias=False)
    tied.weight = torch.nn.Parameter(weight)
    assert tensor_bytes([weight, tied.weight, weight[:10], None]) == 1000 * 10 * 4
    assert tensor_bytes([torch.zeros(3), torch.zeros(5, dtype=torch.float64)]) == 3 * 4 + 5 * 8


@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="needs Linux /proc (VmHWM reset)")
def test_probe_sees_each_phase_peak_not_the_process_peak():
    probe = Probe()
    big = torch.ones(64 * 2**20 // 4)  # 64 MB touched, then freed within the phase
    del big
    probe.mark("allocating phase")
    probe.mark("quiet phase")
    allocating, quiet = probe.rows
    assert allocating["peak_mb"] - allocating["rss_mb"] > 50  # the freed 64 MB shows in this phase's peak only
    assert quiet["peak_mb"] - quiet["rss_mb"] < 20  # the high-water mark was reset at the phase boundary
    assert allocating["minor_faults_k"] > 10  # 64 MB of fresh pages = 16k faults of 4 KB


def test_memory_profile_runs_each_optimiser_setting_it_names():
    from benchmarks.memory_profile import OPTIMIZERS, optimizer_setting
    from lit_align.optim import LowMemoryAdamW

    built = {name: optimizer_setting(name) for name in OPTIMIZERS}
    assert built["adamw"] == {"optimizer": torch.optim.AdamW}
    for name in ("bf16", "in-backward", "bf16-in-backward"):
        optimizer = built[name]["optimizer"]([torch.nn.Parameter(torch.zeros(3))])
        assert isinstance(optimizer, LowMemoryAdamW)
        assert optimizer.state_dtype == (torch.bfloat16 if name.startswith("bf16") else torch.float32)
        assert built[name]["optimizer_in_backward"] == name.endswith("in-backward")


def test_evaluation_benchmark_runs_both_engines_and_they_agree():
    from benchmarks.bench_evaluation import main

    rows = main(["--model", "embedded:micro", "--prompts", "4", "--samples", "2", "--max-new-tokens", "6", "--repeats", "1"])
    assert [row["engine"] for row in rows] == ["generate", "shared_prefill"]
    assert all(row["seconds"] > 0 and row["eval/kl"] > 0 for row in rows)
    assert rows[0]["same_draws"] and rows[0]["kl_close"]
