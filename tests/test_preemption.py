"""Preemption: SIGTERM to a running `python -m lit_align fit` leaves a resumable checkpoint, and
`--ckpt_path last` in a new run continues from it (not from scratch, not from an older `last.ckpt`)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from lit_align.callbacks import Preemption
from tests.conftest import REPO, run_cli
from tests.test_resume import tiny_sft_config


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_that_resumes(tmp_path):
    config = tiny_sft_config(tmp_path)
    env = {**os.environ, "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", "")}
    root = str(tmp_path)
    args = ["fit", "--config", config, "--trainer.max_steps=2000", "--trainer.max_epochs=-1", f"--trainer.logger.init_args.save_dir={root}"]
    process = subprocess.Popen([sys.executable, "-m", "lit_align", *args], cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    checkpoints = os.path.join(root, "sft", "version_0", "checkpoints")
    deadline = time.time() + 240
    # The first ModelCheckpoint file appears after the first validation (step 3): training is under way.
    while not (os.path.isdir(checkpoints) and os.listdir(checkpoints)) and process.poll() is None and time.time() < deadline:
        time.sleep(0.5)
    assert process.poll() is None, f"run ended before it could be preempted:\n{process.stdout.read()}"
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=120)
    assert "SIGTERM received" in output and "--ckpt_path last" in output, output
    assert "Traceback" not in output, output
    preempted = os.path.join(checkpoints, "preempted.ckpt")
    saved = torch.load(preempted, weights_only=True)
    step = saved["global_step"]
    assert 3 <= step < 2000
    # It is the newest checkpoint, so `last` picks it over the validation-time last.ckpt.
    assert max(os.listdir(checkpoints), key=lambda n: os.path.getmtime(os.path.join(checkpoints, n))) == "preempted.ckpt"

    cli = run_cli(["fit", "--config", config, f"--trainer.max_steps={step + 2}", "--trainer.max_epochs=-1", "--ckpt_path=last"], root)
    assert cli.trainer.global_step == step + 2  # two more steps, not step + 2 from scratch
    assert cli.trainer.logger.version == 1


def test_checkpoints_carry_rng_states():
    callback = Preemption()
    torch.manual_seed(7), np.random.seed(7), random.seed(7)
    state = callback.state_dict()
    expected = (torch.rand(3), np.random.rand(3), random.random())
    torch.manual_seed(0), np.random.seed(0), random.seed(0)
    callback.load_state_dict(state)
    again = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(expected[0], again[0]) and np.array_equal(expected[1], again[1]) and expected[2] == again[2]
