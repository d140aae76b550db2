"""Shared fixtures. Generated data goes to a per-session temp cache; nothing touches ./data or ./runs."""

from __future__ import annotations

import contextlib
import os

import pytest
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="session", autouse=True)
def isolated_cache(tmp_path_factory):
    """Point the embedded-data cache at a temp dir and pin torch to the 2 CI cores."""
    os.environ["LIT_ALIGN_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    torch.set_num_threads(min(2, os.cpu_count() or 1))
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
