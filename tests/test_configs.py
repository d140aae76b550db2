"""Recipes: each configs/<method>.yaml runs alone; shared defaults have one source; overrides compose;
every shipped YAML parses against the code; the old three-file command lines still give the same run."""

import glob
import os

import pytest
import yaml

from tests.conftest import REPO, run_cli

CONFIGS = os.path.join(REPO, "configs")
RECIPES = sorted(p for p in glob.glob(os.path.join(CONFIGS, "*.yaml")) if os.path.basename(p) != "base.yaml")
# A plug-in algorithm outside the package: a model block only, trained on the embedded pairs.
SIMPO = ["--config", os.path.join(REPO, "examples/simpo.yaml"), "--data", os.path.join(REPO, "configs/data/embedded/pairs.yaml")]
ALL_YAML = sorted(
    glob.glob(os.path.join(CONFIGS, "**/*.yaml"), recursive=True)
    + glob.glob(os.path.join(REPO, "experiments/**/*.yaml"), recursive=True)
    + glob.glob(os.path.join(REPO, "examples/**/*.yaml"), recursive=True)
)
SFT = os.path.join(CONFIGS, "sft.yaml")
# The old layout (base + data + algorithm), kept for existing command lines.
OLD_DATA = {"sft": "embedded_sft", "kto": "embedded_unpaired", "bond": "embedded_best_of_n", "jbond": "embedded_best_of_n"}
OLD_METHODS = sorted(os.path.splitext(os.path.basename(p))[0] for p in glob.glob(os.path.join(CONFIGS, "algorithm", "*.yaml")))


def _rel(path):
    return os.path.relpath(path, REPO)


def _load(path):
    with open(path) as f:
        return yaml.safe_load(f) or {}


def printed_config(args, capsys) -> dict:
    from lit_align.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["fit", *args, "--print_config"])
    assert exit_info.value.code in (0, None)
    return yaml.safe_load(capsys.readouterr().out)


@pytest.mark.parametrize("path", ALL_YAML, ids=_rel)
def test_yaml_parses_against_the_code(path, capsys):
    content = _load(path)
    if not isinstance(content, dict):
        return  # still valid YAML (loaded above)
    if "class_path" in content:  # a nested file, e.g. `data: data/embedded/pairs.yaml`
        key = "data" if ".data." in content["class_path"] else "model"
        args = ["--config", SFT, f"--{key}={path}"]
    elif {"model", "data", "trainer", "config"} & set(content):
        args = ["--config", SFT, "--config", path]  # partial files layer on a complete recipe
    else:
        return  # not a lit_align fit config (e.g. the AIF stage's own CLI)
    printed = printed_config(args, capsys)
    assert "model" in printed and "trainer" in printed


@pytest.mark.parametrize("path", RECIPES, ids=_rel)
def test_recipe_alone_is_complete(path, capsys):
    """One file is enough: model, data, trainer, logger and callbacks all come out set."""
    printed = printed_config(["--config", path], capsys)
    assert printed["model"]["class_path"] == _load(path)["model"]["class_path"]
    assert printed["data"]["class_path"].startswith(("lit_align.data.", "lit_align.online."))
    assert printed["trainer"]["logger"]["init_args"]["save_dir"] == "runs"
    assert printed["trainer"]["logger"]["init_args"]["default_hp_metric"] is False
    assert printed["trainer"]["gradient_clip_val"] == 1.0
    optimizer = printed["model"]["init_args"]["optimizer"]
    assert optimizer["class_path"] == "torch.optim.AdamW" and optimizer["init_args"]["weight_decay"] == 0.0
    assert any(c["class_path"] == "lit_align.callbacks.ExportPretrained" for c in printed["trainer"]["callbacks"])


def test_shared_defaults_have_one_source():
    """The trainer/logger block and the AdamW settings live in lit_align/defaults.yaml only."""
    for path in RECIPES:
        text = open(path).read()
        assert "weight_decay" not in text and "TensorBoardLogger" not in text and "gradient_clip_val" not in text, _rel(path)


def test_overrides_compose_on_a_recipe(capsys):
    dpo = os.path.join(CONFIGS, "dpo.yaml")
    printed = printed_config(["--config", dpo, "--config", os.path.join(CONFIGS, "trainer/bf16.yaml"),
                              "--model.init_args.beta=0.2", "--trainer.max_steps=7",
                              "--model.init_args.optimizer.init_args.lr=0.001"], capsys)
    assert printed["model"]["init_args"]["beta"] == 0.2
    assert printed["model"]["init_args"]["optimizer"]["init_args"] == {**printed["model"]["init_args"]["optimizer"]["init_args"], "lr": 0.001, "weight_decay": 0.0}
    assert printed["trainer"]["max_steps"] == 7 and printed["trainer"]["precision"] == "bf16-mixed"
    assert printed["data"]["init_args"]["batch_size"] == 16  # the recipe's data file, untouched


@pytest.mark.parametrize("method", OLD_METHODS)
def test_three_file_command_lines_give_the_recipe(method, capsys):
    recipe = printed_config(["--config", os.path.join(CONFIGS, f"{method}.yaml")], capsys)
    old = printed_config(["--config", os.path.join(CONFIGS, "base.yaml"),
                          "--config", os.path.join(CONFIGS, "data", OLD_DATA.get(method, "embedded_pairs") + ".yaml"),
                          "--config", os.path.join(CONFIGS, "algorithm", f"{method}.yaml")], capsys)
    assert old == recipe


@pytest.mark.parametrize("args", [["--config", p] for p in RECIPES] + [SIMPO], ids=lambda a: _rel(a[1]))
def test_recipe_runs_fast_dev_run(args, tmp_path):
    cli = run_cli(
        [
            "fit",
            *args,
            "--model.init_args.model=embedded:micro",
            "--data.init_args.num_examples=24",
            "--data.init_args.num_val_examples=8",
            "--data.init_args.batch_size=4",
            "--trainer.fast_dev_run=2",
            "--trainer.enable_progress_bar=false",
            "--trainer.enable_model_summary=false",
        ],
        str(tmp_path),
    )
    assert cli.trainer.state.finished
    assert cli.trainer.global_step == 2
    logged = cli.trainer.logged_metrics
    loss = logged.get("train/loss")
    assert loss is not None and bool(loss.isfinite())
