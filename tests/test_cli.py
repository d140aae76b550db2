"""The command line as a user meets it: a bad input prints `lit_align: error: <one paragraph>` and
exits non-zero, without a traceback (unless --debug / LIT_ALIGN_DEBUG=1); real bugs keep theirs.

A few bad inputs run `python -m lit_align` in a subprocess (about 10 s of imports each): the first error
a new user meets, the offline hub lookup, and the output folders. The others go through ``cli_main``
in-process, the function `python -m lit_align` calls, which prints the same paragraph and exit status."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from lit_align.cli import cli_main, user_error
from lit_align.errors import ConfigError, DataError
from tests.conftest import REPO, cli_in_process

SFT = os.path.join(REPO, "configs", "sft.yaml")
DPO = os.path.join(REPO, "configs", "dpo.yaml")
SMALL = ["--model.init_args.model=embedded:micro", "--data.init_args.num_val_examples=4", "--trainer.max_steps=1",
         "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]
ROWS = [{"prompt": f"review {i} :", "completion": "the food was good"} for i in range(40)]


@pytest.fixture(autouse=True)
def _errors_without_traceback(monkeypatch):
    monkeypatch.delenv("LIT_ALIGN_DEBUG", raising=False)  # the in-process cases read it as the subprocess would


def run_lit_align(cwd, *args: str, **env: str) -> subprocess.CompletedProcess:
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PYTHONPATH": REPO, "LIT_ALIGN_DEBUG": "", **env}
    return subprocess.run([sys.executable, "-m", "lit_align", "fit", *args], cwd=cwd, env=environment, capture_output=True, text=True, timeout=600)


def assert_one_paragraph(result: subprocess.CompletedProcess, *expected: str) -> str:
    err = result.stderr
    assert result.returncode != 0, err
    assert "Traceback" not in err and "Namespace(" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("lit_align: error: ")]
    assert len(lines) == 1, err
    message = lines[0]
    for text in expected:
        assert text in message, err
    assert "--debug" in err and "LIT_ALIGN_DEBUG=1" in err  # says how to get the traceback
    return message


def write_jsonl(path, rows) -> str:
    with open(path, "w") as f:
        f.writelines(json.dumps(row) + "\n" for row in rows)
    return str(path)


def test_missing_start_model_names_the_command_that_creates_it(tmp_path):
    # The DPO recipe alone, in a folder where the SFT recipe has not run: no namespace dump, the fix.
    result = run_lit_align(tmp_path, "--config", DPO)
    assert_one_paragraph(result, "'data/embedded/sft' does not exist", "python -m lit_align fit --config configs/sft.yaml")
    assert not os.path.exists(tmp_path / "runs" / "dpo")  # a failed start leaves no empty version_N


def test_missing_checkpoint_path(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code, _, err = run_in_process(capsys, "--config", SFT, *SMALL, "--data.init_args.num_examples=16", "--ckpt_path=nowhere/last.ckpt")
    one_paragraph(code, err, "--ckpt_path 'nowhere/last.ckpt' does not exist")
    assert not os.path.exists(tmp_path / "runs" / "sft")


def test_dataset_not_available_offline(tmp_path):
    result = run_lit_align(tmp_path, "--config", SFT, *SMALL, "--data.init_args.dataset=no-such-user/no-such-dataset")
    assert_one_paragraph(result, "no-such-user/no-such-dataset", "available offline")


def test_max_length_beyond_the_model_positions(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    data = write_jsonl(tmp_path / "sft.jsonl", ROWS)
    code, _, err = run_in_process(capsys, "--config", SFT, *SMALL, f"--data.init_args.dataset={data}", "--data.init_args.max_length=4096")
    one_paragraph(code, err, "max_length=4096", "max_position_embeddings")


def test_fewer_rows_than_batch_size(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    data = write_jsonl(tmp_path / "sft.jsonl", ROWS[:6])
    code, _, err = run_in_process(capsys, "--config", SFT, *SMALL, f"--data.init_args.dataset={data}", "--data.init_args.val_split=null",
                                  "--data.init_args.batch_size=32")
    one_paragraph(code, err, "batch_size")


def test_malformed_jsonl_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "sft.jsonl"
    path.write_text(json.dumps(ROWS[0]) + '\n{"prompt": "a", completion\n')
    code, _, err = run_in_process(capsys, "--config", SFT, *SMALL, f"--data.init_args.dataset={path}")
    one_paragraph(code, err, "sft.jsonl: could not parse the file")
    assert not (tmp_path / "runs" / "sft").exists()  # the failed start's version_N is removed again
    # On request, the exception itself (with its traceback): the flag is stripped before LightningCLI sees it.
    with pytest.raises(DataError, match="could not parse the file"):
        cli_main(["fit", "--config", SFT, *SMALL, f"--data.init_args.dataset={path}", "--debug"])


def test_completion_that_is_an_int(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    data = write_jsonl(tmp_path / "sft.jsonl", ROWS[:20] + [{"prompt": "review :", "completion": 7}] + ROWS[20:])
    code, _, err = run_in_process(capsys, "--config", SFT, *SMALL, f"--data.init_args.dataset={data}")
    one_paragraph(code, err, "sft.jsonl", "completion", "int")


def test_file_that_is_not_utf8(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "sft.jsonl"
    path.write_bytes(b"".join(json.dumps(row).encode() + b"\n" for row in ROWS) + '{"prompt": "caf\u00e9", "completion": "x"}\n'.encode("latin-1"))
    code, _, err = run_in_process(capsys, "--config", SFT, *SMALL, f"--data.init_args.dataset={path}")
    one_paragraph(code, err, "UTF-8")


# ----- in-process: what is and is not a user error ---------------------------------------------
def test_user_error_is_found_behind_wrappers():
    try:
        try:
            raise DataError("rows.jsonl row 3: bad")
        except DataError as inner:
            raise ValueError("Problem with given class_path 'X': ...namespace dump...") from inner
    except ValueError as wrapped:
        assert isinstance(user_error(wrapped), DataError)
    assert user_error(RuntimeError("a bug")) is None
    assert user_error(ConfigError("x")) is not None


def test_bugs_keep_their_traceback(monkeypatch, capsys):
    def bug(args=None):
        raise RuntimeError("a real bug")

    monkeypatch.setattr("lit_align.cli.main", bug)
    with pytest.raises(RuntimeError, match="a real bug"):
        cli_main(["fit"])

    def config_problem(args=None):
        raise ConfigError("DPO: beta must be in (0, inf), got -1.0")

    monkeypatch.setattr("lit_align.cli.main", config_problem)
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["fit"])
    assert exit_info.value.code == 1
    assert "lit_align: error: DPO: beta must be in (0, inf), got -1.0" in capsys.readouterr().err
    with pytest.raises(ConfigError):
        cli_main(["fit", "--debug"])


def test_import_silences_only_the_known_noise():
    """Python-API users (Trainer.fit without the CLI) get the same quiet screen: importing lit_align
    drops Lightning's eval-mode warning, the LeafSpec deprecation and the litlogger tip, nothing else."""
    code = (
        "import logging, warnings, lit_align\n"
        "logging.basicConfig(level=logging.INFO)\n"
        "warnings.warn('Found 2 module(s) in eval mode at the start of training.')\n"
        "warnings.warn('isinstance(treespec, LeafSpec) is deprecated')\n"
        "warnings.warn('an unrelated warning')\n"
        "log = logging.getLogger('lightning.pytorch.utilities.rank_zero')\n"
        "log.info('Tip: try installing [litlogger](https://pypi.org/project/litlogger/)')\n"
        "log.info('GPU available: False')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "eval mode" not in result.stderr and "LeafSpec" not in result.stderr and "litlogger" not in result.stderr
    assert "an unrelated warning" in result.stderr and "GPU available" in result.stderr


def test_outputs_go_to_cwd_runs_and_the_user_cache(tmp_path):
    """runs/ is relative to the current directory; generated data goes to ~/.cache/lit_align (here a
    temp HOME, never the real one), not to the current directory, so another folder reuses it."""
    work, home = tmp_path / "work", tmp_path / "home"
    work.mkdir()
    env = {"HOME": str(home), "LIT_ALIGN_CACHE": "", "XDG_CACHE_HOME": ""}
    args = ["--config", DPO, "--model.init_args.model=embedded:micro", "--data.init_args.num_examples=16",
            "--data.init_args.num_val_examples=4", "--data.init_args.batch_size=4", "--trainer.max_steps=1",
            "--trainer.limit_val_batches=1", "--trainer.enable_progress_bar=false", "--trainer.callbacks=[]"]
    result = run_lit_align(work, *args, **env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(os.listdir(work)) == ["runs"] and os.listdir(work / "runs" / "dpo") == ["version_0"]
    cached = sorted(os.listdir(home / ".cache" / "lit_align"))
    assert len(cached) == 2 and all(name.startswith("pairs-") for name in cached)  # train + validation pairs


# ----- faults caught before anything starts (lit_align/cli_checks.py), in-process through cli_main ------
def run_in_process(capsys, *args: str) -> tuple[int, str, str]:
    """``cli_main`` as ``python -m lit_align fit`` calls it; returns (exit status, stdout, stderr)."""
    return cli_in_process(capsys, "fit", *args)


def one_paragraph(code: int, err: str, *expected: str) -> str:
    assert code == 1, err
    return assert_one_paragraph(subprocess.CompletedProcess([], code, "", err), *expected)


def test_yaml_syntax_error_names_the_file(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "recipe.yaml"
    config.write_text("model:\n  class_path: lit_align.algorithms.SFT\n   init_args: [\n")
    code, _, err = run_in_process(capsys, "--config", SFT, "--config", str(config))
    message = one_paragraph(code, err, f"--config {config}: YAML syntax error at line 3, column 13")
    assert "<unicode string>" not in err, message


@pytest.mark.parametrize("lr, why", [("-0.1", "a negative one climbs the loss"), ("0", "at 0 the weights never change")])
def test_learning_rate_must_be_positive(tmp_path, monkeypatch, capsys, lr, why):
    monkeypatch.chdir(tmp_path)
    code, _, err = run_in_process(capsys, "--config", SFT, *SMALL, f"--model.init_args.optimizer.init_args.lr={lr}")
    one_paragraph(code, err, "--model.init_args.optimizer.init_args.lr is", why, "python -m lit_align validate")
    assert not (tmp_path / "runs" / "sft").exists()


def test_more_devices_than_one_process_is_checked_before_spawning(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code, _, err = run_in_process(capsys, "--config", SFT, *SMALL, "--trainer.accelerator=cpu", "--trainer.devices=4")
    one_paragraph(code, err, "--trainer.devices=4", "would start 4 training processes on CPU", "configs/trainer/ddp.yaml",
                  "--trainer.devices=1")
    assert "[rank" not in err


@pytest.mark.parametrize("where", ["logger", "default_root_dir", "cache"])
def test_unwritable_output_folders_are_checked_first(tmp_path, monkeypatch, capsys, where):
    # A path under a regular file cannot be created even by root (for whom os.access is always true).
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a_file").write_text("")
    blocked = str(tmp_path / "a_file" / "out")
    extra = {"logger": [f"--trainer.logger.init_args.save_dir={blocked}"], "default_root_dir": [f"--trainer.default_root_dir={blocked}"],
             "cache": []}[where]
    if where == "cache":
        monkeypatch.setenv("LIT_ALIGN_CACHE", blocked)
    code, _, err = run_in_process(capsys, "--config", SFT, *SMALL, *extra)
    expected = {"logger": "--trainer.logger.init_args.save_dir", "default_root_dir": "--trainer.default_root_dir", "cache": "LIT_ALIGN_CACHE"}[where]
    one_paragraph(code, err, expected, f"{tmp_path / 'a_file'} is a file, not a folder")


def test_max_steps_0_says_nothing_was_trained_or_saved(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code, out, err = run_in_process(capsys, "--config", SFT, *SMALL, "--trainer.max_steps=0", "--data.init_args.num_examples=16", "--data.init_args.batch_size=4")
    assert code == 0, err
    assert "no training step ran, so no policy was exported" in out
    assert "nothing was trained, no checkpoint was written" in out
    assert "saved the trained policy" not in out and "--ckpt_path last" not in out
    assert not (tmp_path / "data" / "embedded" / "sft").exists()  # the recipe's also_to was not overwritten


def test_default_root_dir_moves_the_logs_too(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code, out, err = run_in_process(capsys, "--config", SFT, *SMALL, "--data.init_args.num_examples=16", "--data.init_args.batch_size=4", "--trainer.limit_val_batches=1",
                                    "--trainer.default_root_dir=elsewhere")
    assert code == 0, err
    version = tmp_path / "elsewhere" / "sft" / "version_0"
    assert any(".tfevents." in name for name in os.listdir(version)), os.listdir(version)
    assert os.listdir(version / "checkpoints") and (version / "hf_model" / "model.safetensors").exists()
    assert not (tmp_path / "runs").exists()
    assert "TensorBoard logs in elsewhere/sft/version_0" in out
