"""Every shipped YAML parses against the code, and every algorithm config trains (fast_dev_run)."""

import glob
import os

import pytest
import yaml

from tests.conftest import REPO, run_cli

BASE = os.path.join(REPO, "configs/base.yaml")
SFT_DATA = os.path.join(REPO, "configs/data/embedded_sft.yaml")
SFT_ALGO = os.path.join(REPO, "configs/algorithm/sft.yaml")
ALL_YAML = sorted(
    glob.glob(os.path.join(REPO, "configs/**/*.yaml"), recursive=True)
    + glob.glob(os.path.join(REPO, "experiments/**/*.yaml"), recursive=True)
    + glob.glob(os.path.join(REPO, "examples/**/*.yaml"), recursive=True)
)
ALGORITHMS = sorted(glob.glob(os.path.join(REPO, "configs/algorithm/*.yaml"))) + [os.path.join(REPO, "examples/simpo.yaml")]
# Which embedded data each algorithm trains on (an algorithm added without an entry fails below).
DATA_FOR = {
    "SFT": "embedded_sft",
    "KTO": "embedded_unpaired",
    "BOND": "embedded_best_of_n",
    "JBOND": "embedded_best_of_n",
}


def _rel(path):
    return os.path.relpath(path, REPO)


def _is_lit_align_config(path):
    with open(path) as f:
        content = yaml.safe_load(f) or {}
    return isinstance(content, dict) and bool({"model", "data", "trainer"} & set(content))


@pytest.mark.parametrize("path", ALL_YAML, ids=_rel)
def test_yaml_parses_against_the_code(path, capsys):
    if not _is_lit_align_config(path):
        with open(path) as f:
            yaml.safe_load(f)  # still must be valid YAML
        return
    # Layered on a complete config, so partial files (data-only, trainer presets) parse too; an
    # algorithm config is layered on the data it trains on (it may set data options of that class).
    data = _data_config(path) if os.path.dirname(path).endswith("configs/algorithm") else SFT_DATA
    with pytest.raises(SystemExit) as exit_info:
        run_cli(["fit", "--config", BASE, "--config", data, "--config", SFT_ALGO, "--config", path, "--print_config"], "unused")
    assert exit_info.value.code in (0, None)
    printed = yaml.safe_load(capsys.readouterr().out)
    assert "model" in printed and "trainer" in printed


def _data_config(algorithm_yaml):
    with open(algorithm_yaml) as f:
        class_name = yaml.safe_load(f)["model"]["class_path"].rsplit(".", 1)[-1]
    return os.path.join(REPO, "configs/data", DATA_FOR.get(class_name.upper(), "embedded_pairs") + ".yaml")


@pytest.mark.parametrize("path", ALGORITHMS, ids=_rel)
def test_algorithm_config_runs_fast_dev_run(path, tmp_path):
    cli = run_cli(
        [
            "fit",
            "--config", BASE,
            "--config", _data_config(path),
            "--config", path,
            "--model.init_args.model=embedded:tiny",
            "--data.init_args.num_examples=24",
            "--data.init_args.num_val_examples=8",
            "--data.init_args.batch_size=4",
            "--trainer.fast_dev_run=2",
            "--trainer.enable_progress_bar=false",
        ],
        str(tmp_path),
    )
    assert cli.trainer.state.finished
    assert cli.trainer.global_step == 2
    logged = cli.trainer.logged_metrics
    assert "train/loss" in logged and bool(logged["train/loss"].isfinite())
