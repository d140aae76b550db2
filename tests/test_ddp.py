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


def start_worker(out_dir: str, devices: int) -> subprocess.Popen:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    env.pop("LOCAL_RANK", None)
    return subprocess.Popen([sys.executable, os.path.join(REPO, "tests", "ddp_worker.py"), out_dir, str(devices)], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def results(out_dir: str, devices: int, worker: subprocess.Popen) -> tuple[dict, torch.Tensor]:
    output, _ = worker.communicate(timeout=240)
    assert worker.returncode == 0, f"{devices} device(s):\n{output[-3000:]}"
    with open(os.path.join(out_dir, f"metrics_{devices}.json")) as f:
        return json.load(f), torch.load(os.path.join(out_dir, f"weights_{devices}.pt"))


@pytest.mark.slow
def test_ddp_step_equals_single_process_on_the_global_batch(tmp_path):
    # Both at once, each in a folder of its own (each writes the same pairs): the test takes the longer one's time, not the sum.
    folders = {devices: tmp_path / f"devices{devices}" for devices in (1, 2)}
    workers = {}
    for devices, folder in folders.items():
        folder.mkdir()
        workers[devices] = start_worker(str(folder), devices)
    single, single_weights = results(str(folders[1]), 1, workers[1])
    ddp, ddp_weights = results(str(folders[2]), 2, workers[2])
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
