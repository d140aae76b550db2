"""Shared fixtures. Generated data goes to a per-session temp cache; nothing touches ./data or ./runs."""

from __future__ import annotations

import contextlib
import os

import pytest
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="session", autouse=True)
def isolated_cache(tmp_path_factory):
    """Point the embedded-data cache at a temp dir and pin torch to the 2 CI cores, shared out among
    pytest-xdist workers if the suite is run with ``-n`` (oversubscribed OpenMP threads spin)."""
    os.environ["LIT_ALIGN_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1) // workers))
    yield


def run_cli(args: list[str], root: str):
    """Run ``python -m lit_align`` in-process with logs under ``root``; returns the LightningCLI."""
    from lit_align.cli import main

    return main(args + [f"--trainer.logger.init_args.save_dir={root}", f"--trainer.default_root_dir={root}"])


@pytest.fixture(scope="session")
def embedded_sft_model(tmp_path_factory) -> str:
    """A short SFT run of the tiny model on embedded demonstrations (~20 s): the start of e2e tests."""
    root = tmp_path_factory.mktemp("sft")
    # The SFT config exports to the relative path data/embedded/sft: run it from the temp dir.
    with contextlib.chdir(root):
        run_cli(
        [
            "fit",
            "--config", os.path.join(REPO, "configs/sft.yaml"),
            "--trainer.max_epochs=1",
            "--trainer.enable_progress_bar=false",
        ],
        str(root),
        )
    return str(root / "data" / "embedded" / "sft")


def cli_in_process(capture, *args: str) -> tuple[int, str, str]:
    """``cli_main(args)``, the function ``python -m lit_align`` calls, in this process: (exit status,
    stdout, stderr) as a user's shell would see them, without a subprocess's ~10 s of imports.
    ``capture`` is pytest's ``capsys``, or ``capfd`` to also get what logging handlers print (they
    hold the streams of import time). LIT_ALIGN_DEBUG is unset meanwhile, so a bad input prints its
    paragraph instead of raising."""
    from lit_align.cli import cli_main

    debug = os.environ.pop("LIT_ALIGN_DEBUG", None)
    capture.readouterr()
    code = 0
    try:
        cli_main(list(args))
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
    finally:
        if debug is not None:
            os.environ["LIT_ALIGN_DEBUG"] = debug
    out, err = capture.readouterr()
    return code, out, err
