"""DDP correctness on CPU: one step on 2 processes (gloo) equals one process on the same global batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from lit_align.modeling import load_causal_lm
from tests.conftest import REPO


def run_worker(out_dir: str, devices: int) -> tuple[dict, torch.Tensor]:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    env.pop("LOCAL_RANK", None)
    subprocess.run([sys.executable, os.path.join(REPO, "tests", "ddp_worker.py"), out_dir, str(devices)], check=True, cwd=REPO, env=env, timeout=240, capture_output=True)
    with open(os.path.join(out_dir, f"metrics_{devices}.json")) as f:
        return json.load(f), torch.load(os.path.join(out_dir, f"weights_{devices}.pt"))


@pytest.mark.slow
def test_ddp_step_equals_single_process_on_the_global_batch(tmp_path):
    single, single_weights = run_worker(str(tmp_path), 1)
    ddp, ddp_weights = run_worker(str(tmp_path), 2)
    names = [k for k in single if k.startswith(("train/", "val/", "num_val_examples"))]
    names.remove("num_val_examples_rank0")
    # Loss, implicit-reward metrics (train: this step's batch; val: after the update) all present.
    for name in ("train/loss", "train/rewards/accuracies", "train/logps/chosen", "val/loss", "val/rewards/margins"):
        assert name in names
    for name in names:
        assert ddp[name] == pytest.approx(single[name], abs=1e-4, rel=1e-4), name
    # Validation was split between the ranks (each example once), not repeated on both.
    assert single["num_val_examples_rank0"] == single["num_val_examples"] == 8
    assert ddp["num_val_examples_rank0"] == 4
    # At step 0 policy == reference: the DPO loss is log 2 on both.
    assert single["train/loss"] == pytest.approx(0.6931, abs=1e-3)
    # The SGD update moved the weights, identically: DDP averaged the rank gradients correctly.
    start = torch.cat([p.flatten() for p in load_causal_lm("embedded:micro").parameters()])
    assert (single_weights - start).abs().max() > 1e-3
    torch.testing.assert_close(ddp_weights, single_weights, atol=1e-5, rtol=1e-4)
