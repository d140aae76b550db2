"""Preemption: SIGTERM to a running `python -m lit_align fit` leaves a resumable checkpoint, and
`--ckpt_path last` in a new run continues from it (not from scratch, not from an older `last.ckpt`)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time

import errno
import re
import shutil

import numpy as np
import pytest
import torch
from lightning import Callback

from lit_align.callbacks import Preemption
from lit_align.checkpoint_io import TEMP_MARK, atomic_torch_save, unreadable_reason
from lit_align.cli import cli_main
from lit_align.errors import UserError
from tests.conftest import REPO, run_cli
from tests.test_resume import TINY_SFT, tiny_sft_config


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
    assert process.returncode == 143, output  # 128 + SIGTERM: a scheduler must not see a finished run
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


# ----- interrupted and failed saves (lit_align/checkpoint_io.py) ----------------------------------------
def test_save_goes_to_a_temp_file_beside_the_checkpoint_then_replaces_it(tmp_path, monkeypatch):
    target = tmp_path / "last.ckpt"
    torch.save({"step": 1}, target)
    replaced = []
    real_replace = os.replace
    monkeypatch.setattr(os, "replace", lambda src, dst: (replaced.append((src, dst)), real_replace(src, dst)))
    atomic_torch_save({"step": 2}, str(target))
    (source, destination), = replaced
    assert os.path.dirname(source) == str(tmp_path) and TEMP_MARK in source and destination == str(target)
    assert torch.load(target, weights_only=True) == {"step": 2} and os.listdir(tmp_path) == ["last.ckpt"]


@pytest.mark.parametrize("error", [OSError(errno.ENOSPC, "No space left on device"), KeyboardInterrupt()])
def test_a_save_that_fails_midway_leaves_the_old_checkpoint_and_no_partial_file(tmp_path, monkeypatch, error):
    target = tmp_path / "last.ckpt"
    torch.save({"step": 1}, target)
    real_save = torch.save

    def save_half(obj, f, *args, **kwargs):
        real_save(obj, f, *args, **kwargs)
        f.truncate(f.tell() // 2)  # a partial file on disk, then the failure
        raise error

    monkeypatch.setattr(torch, "save", save_half)
    with pytest.raises(UserError if isinstance(error, OSError) else KeyboardInterrupt) as info:
        atomic_torch_save({"step": 2}, str(target))
    assert os.listdir(tmp_path) == ["last.ckpt"] and torch.load(target, weights_only=True) == {"step": 1}
    if isinstance(error, OSError):
        assert "no space left on the device" in str(info.value) and "partial file was removed" in str(info.value)
        assert "--ckpt_path last" in str(info.value)


def test_unreadable_checkpoints_are_recognised(tmp_path):
    good = tmp_path / "good.ckpt"
    torch.save({"global_step": 3, "weights": torch.zeros(100)}, good)
    empty, cut = tmp_path / "empty.ckpt", tmp_path / "cut.ckpt"
    empty.write_bytes(b"")
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    assert unreadable_reason(str(good)) is None
    assert "0 bytes" in unreadable_reason(str(empty)) and "truncated" in unreadable_reason(str(cut))


def short_run(tmp_path, *extra: str) -> tuple[str, str]:
    """3 steps of the tiny SFT run (validation and checkpoints at step 3): (config, checkpoint folder)."""
    config = tiny_sft_config(tmp_path)
    run_cli(["fit", "--config", config, "--trainer.max_steps=3", *extra], str(tmp_path))
    return config, os.path.join(str(tmp_path), "sft", "version_0", "checkpoints")


def test_last_skips_an_unreadable_newer_checkpoint_and_says_so(tmp_path, capsys):
    config, checkpoints = short_run(tmp_path)
    last = os.path.join(checkpoints, "last.ckpt")
    # What a SIGTERM whose grace period ran out left: a partial preempted.ckpt, newer than last.ckpt.
    with open(last, "rb") as f:
        data = f.read()
    with open(os.path.join(checkpoints, "preempted.ckpt"), "wb") as f:
        f.write(data[: len(data) // 2])
    os.utime(last, (time.time() - 60, time.time() - 60))
    capsys.readouterr()
    cli = run_cli(["fit", "--config", config, "--trainer.max_steps=4", "--ckpt_path=last"], str(tmp_path))
    err = capsys.readouterr().err
    assert "--ckpt_path last skips" in err and "preempted.ckpt: it is truncated" in err, err
    assert cli.trainer.global_step == 4  # resumed from last.ckpt (step 3), not from scratch
    assert cli.trainer.ckpt_path == last


def test_resume_refuses_a_checkpoint_of_another_algorithm(tmp_path, capsys):
    config, checkpoints = short_run(tmp_path)
    last = os.path.join(checkpoints, "last.ckpt")
    # A DPO run of the same run name (the check reads only the identity every checkpoint carries).
    state = torch.load(last, weights_only=True)
    assert state["lit_align"] == {"algorithm": "lit_align.algorithms.sft.SFT", "datamodule": "lit_align.data.sft.SFTDataModule"}
    state["lit_align"] = {"algorithm": "lit_align.algorithms.dpo.DPO", "datamodule": "lit_align.data.pairwise.PairwiseDataModule"}
    torch.save(state, last)
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        cli_main(["fit", "--config", config, "--trainer.max_steps=4", "--ckpt_path=last", f"--trainer.logger.init_args.save_dir={tmp_path}"])
    err = capsys.readouterr().err
    assert stop.value.code == 1 and "Traceback" not in err
    assert "is a checkpoint of algorithm lit_align.algorithms.dpo.DPO, but this run's algorithm is lit_align.algorithms.sft.SFT" in err, err
    assert "--run_name" in err
    assert sorted(os.listdir(tmp_path / "sft")) == ["version_0"]  # the refused start left no version_1


# ----- signals through the real CLI in a subprocess -------------------------------------------------
class MarkSteps(Callback):
    """Test helper: after each optimiser step, write the global step to ``marker`` and pause, so the
    test can send its signals while training is under way."""

    def __init__(self, marker: str, pause: float = 0.0) -> None:
        self.marker, self.pause = marker, pause

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        with open(self.marker + ".tmp", "w") as f:
            f.write(str(trainer.global_step))
        os.replace(self.marker + ".tmp", self.marker)
        time.sleep(self.pause)


def start_marked_run(tmp_path, config: str, pause: float, *extra: str) -> tuple[subprocess.Popen, str]:
    marker = str(tmp_path / "step")
    mark = '--trainer.callbacks+={"class_path": "tests.test_preemption.MarkSteps", "init_args": {"marker": "%s", "pause": %s}}' % (marker, pause)
    env = {**os.environ, "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", ""), "LIT_ALIGN_DEBUG": ""}
    args = ["fit", "--config", config, "--trainer.max_steps=2000", "--trainer.max_epochs=-1", f"--trainer.logger.init_args.save_dir={tmp_path}", mark, *extra]
    process = subprocess.Popen([sys.executable, "-m", "lit_align", *args], cwd=str(tmp_path), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return process, marker


def wait_for(process: subprocess.Popen, condition, what: str, timeout: float = 240) -> None:
    deadline = time.time() + timeout
    while not condition():
        assert process.poll() is None, f"run ended before {what}:\n{process.stdout.read()}"
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def marked_step(marker: str) -> int:
    try:
        with open(marker) as f:
            return int(f.read() or -1)
    except FileNotFoundError:
        return -1


@pytest.mark.slow
def test_ctrl_c_saves_a_checkpoint_exits_130_and_resumes(tmp_path):
    config = tiny_sft_config(tmp_path)
    process, marker = start_marked_run(tmp_path, config, 0.5)
    wait_for(process, lambda: marked_step(marker) >= 1, "the first step")
    process.send_signal(signal.SIGINT)
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 130, output
    assert "Ctrl-C (SIGINT) received at global step" in output and "--ckpt_path last" in output, output
    assert "Traceback" not in output, output
    preempted = os.path.join(str(tmp_path), "sft", "version_0", "checkpoints", "preempted.ckpt")
    step = torch.load(preempted, weights_only=True)["global_step"]
    assert step >= 1
    cli = run_cli(["fit", "--config", config, f"--trainer.max_steps={step + 1}", "--trainer.max_epochs=-1", "--ckpt_path=last"], str(tmp_path))
    assert cli.trainer.global_step == step + 1 and cli.trainer.ckpt_path == preempted


@pytest.mark.slow
def test_second_ctrl_c_stops_at_once_and_says_what_was_lost(tmp_path):
    config = tiny_sft_config(tmp_path)
    process, marker = start_marked_run(tmp_path, config, 1.5)
    last = os.path.join(str(tmp_path), "sft", "version_0", "checkpoints", "last.ckpt")
    # last.ckpt is written at the validation after step 3; interrupt during step 4's pause.
    wait_for(process, lambda: marked_step(marker) >= 4 and os.path.exists(last), "step 4")
    process.send_signal(signal.SIGINT)
    time.sleep(0.3)
    process.send_signal(signal.SIGINT)
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 130, output
    # Step 4 unless a loaded machine let the run reach another step's pause first.
    stopped = re.search(r"interrupted at global step (\d+) without saving: the (\d+) step\(s\) since the last checkpoint are lost", output)
    assert stopped and int(stopped.group(1)) >= 4 and int(stopped.group(2)) == int(stopped.group(1)) - 3, output
    assert f"--ckpt_path last resumes from {last} (global step 3)" in output, output


def small_filesystem(tmp_path) -> str:
    """A 64 MB tmpfs at ``tmp_path/disk`` (needs root and mount); skips the test where not allowed."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if shutil.which("mount") is None or os.geteuid() != 0:
        pytest.skip("needs root and mount(8) for a small tmpfs")
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(disk)], capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")
    return str(disk)


def fill(folder: str) -> None:
    """Write a ballast file until the filesystem is full."""
    with open(os.path.join(folder, "ballast"), "wb") as f:
        try:
            while True:
                f.write(b"\0" * (1 << 20))
                f.flush()
        except OSError as error:
            assert error.errno == errno.ENOSPC
    try:  # and the last partial MB
        with open(os.path.join(folder, "ballast2"), "wb") as f:
            while True:
                f.write(b"\0" * 4096)
                f.flush()
    except OSError:
        pass


@pytest.mark.slow
def test_disk_full_while_saving_keeps_last_and_leaves_no_partial_file(tmp_path):
    disk = small_filesystem(tmp_path)
    process = None
    try:
        # Checkpoints on the small disk; logs and data elsewhere.
        config = tmp_path / "tiny_sft.yaml"
        config.write_text(TINY_SFT.replace("init_args: {save_last: true,", f"init_args: {{dirpath: {disk}/ckpt, save_last: true,"))
        process, marker = start_marked_run(tmp_path, str(config), 1.0)
        last = os.path.join(disk, "ckpt", "last.ckpt")
        wait_for(process, lambda: marked_step(marker) >= 4 and os.path.exists(last), "the first checkpoint")
        fill(disk)  # the next validation (step 6) saves step=5.ckpt/last.ckpt into a full disk
        output, _ = process.communicate(timeout=240)
        assert process.returncode == 1, output
        errors = [line for line in output.splitlines() if line.startswith("lit_align: error: ")]
        assert len(errors) == 1 and "no space left on the device" in errors[0] and "--ckpt_path last" in errors[0], output
        assert "Traceback" not in output, output
        names = sorted(os.listdir(os.path.join(disk, "ckpt")))
        assert not [n for n in names if TEMP_MARK in n], names  # the partial file was removed
        assert all(unreadable_reason(os.path.join(disk, "ckpt", n)) is None for n in names), names
        assert torch.load(last, weights_only=True)["global_step"] == 3
    finally:
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()
        subprocess.run(["umount", disk], capture_output=True)


class _KillWhilePickled:
    def __reduce__(self):
        os.kill(os.getpid(), signal.SIGKILL)  # kill -9 in the middle of torch.save


class KillDuringSave(Callback):
    """Test helper: kill -9 this process while it writes the checkpoint of global step ``step``."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_save_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        if trainer.global_step == self.step:
            checkpoint["kill"] = _KillWhilePickled()


@pytest.mark.slow
def test_kill_9_during_a_save_leaves_last_resumable(tmp_path, capsys):
    config = tiny_sft_config(tmp_path)
    env = {**os.environ, "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", ""), "LIT_ALIGN_DEBUG": ""}
    kill = '--trainer.callbacks+={"class_path": "tests.test_preemption.KillDuringSave", "init_args": {"step": 6}}'
    args = ["fit", "--config", config, f"--trainer.logger.init_args.save_dir={tmp_path}", kill]
    result = subprocess.run([sys.executable, "-m", "lit_align", *args], cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == -signal.SIGKILL, result.stderr[-3000:]
    checkpoints = os.path.join(str(tmp_path), "sft", "version_0", "checkpoints")
    names = os.listdir(checkpoints)
    leftovers = [n for n in names if TEMP_MARK in n]
    assert len(leftovers) == 1, names  # the killed save's temp file, beside the checkpoints (not in /tmp)
    last = os.path.join(checkpoints, "last.ckpt")
    assert unreadable_reason(last) is None and torch.load(last, weights_only=True)["global_step"] == 3
    capsys.readouterr()
    cli = run_cli(["fit", "--config", config, "--trainer.max_steps=4", "--ckpt_path=last"], str(tmp_path))
    assert cli.trainer.global_step == 4 and cli.trainer.ckpt_path == last
    assert "partial save(s) of a killed run" in capsys.readouterr().err
