"""benchmarks/gpu_check.sh dry-run on the CPU at tiny size: every run of the GPU table completes and
the export/reload smoke passes, so the script works the first time a GPU is lent."""

from __future__ import annotations

import os
import subprocess

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_gpu_check_dry_run_prints_the_full_table(tmp_path):
    env = {**os.environ, "LIT_ALIGN_GPU_CHECK_TINY": "1", "LIT_ALIGN_CACHE": str(tmp_path / "cache"), "LIT_ALIGN_WHEELS": str(tmp_path / "no-wheels")}
    proc = subprocess.run(["bash", os.path.join(REPO, "benchmarks", "gpu_check.sh")], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "flex block mask vs dense mask, forward on cpu" in proc.stdout and "MISMATCH" not in proc.stdout  # benchmarks/flex_check.py
    table = proc.stdout[proc.stdout.index("## GPU check (CPU dry run at tiny size)") :]
    rows = {line.split("|")[1].strip(): line for line in table.splitlines() if line.startswith("| ") and not line.startswith("| run")}
    for run, head, sharing in [("dpo-copy", "compact", "off"), ("dpo-copy-fullhead", "full", "off"), ("dpo-copy-shared", "compact", "on"), ("dpo-copy-fullhead-shared", "full", "on")]:
        cells = [c.strip() for c in rows[run].split("|")[1:-1]]
        assert cells[1:3] == [head, sharing]
        assert float(cells[3]) > 0  # pairs/s
    smoke = next(line for name, line in rows.items() if name.startswith("fsdp-smoke"))
    assert "export + reload OK" in smoke
