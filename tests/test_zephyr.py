"""The Zephyr pipeline (experiments/zephyr): stage planning, one quick end-to-end run, and its configs."""

from __future__ import annotations

import importlib.util
import json
import os

import pytest
import yaml
from datasets import load_from_disk

from lit_align.data.pairwise import PairwiseDataModule
from lit_align.data.sft import SFTDataModule
from tests.conftest import REPO, run_cli
from tests.test_aif import make_tiny_reward_model

HERE = os.path.join(REPO, "experiments", "zephyr")
CONFIGS = os.path.join(HERE, "configs")
BASE = os.path.join(REPO, "configs", "base.yaml")
ULTRACHAT = os.path.join(REPO, "tests", "data", "zephyr_ultrachat.jsonl")
ULTRAFEEDBACK = os.path.join(REPO, "tests", "data", "zephyr_ultrafeedback.jsonl")


def load_run_module():
    spec = importlib.util.spec_from_file_location("zephyr_run", os.path.join(HERE, "run.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def data_settings(config: str, **overrides) -> dict:
    with open(os.path.join(CONFIGS, config)) as f:
        return {**yaml.safe_load(f)["data"]["init_args"], **overrides}


# ----- stage planning --------------------------------------------------------------------------
def test_finished_stages_are_skipped_unless_forced_or_upstream_reran():
    zephyr = load_run_module()
    stages = zephyr.STAGES
    assert zephyr.stages_to_run(stages, set(), set()) == stages
    assert zephyr.stages_to_run(stages, set(stages), set()) == []
    # Redoing AIF invalidates both DPO runs and the evaluation, not the SFT models.
    assert zephyr.stages_to_run(stages, set(stages), {"aif"}) == ["aif", "ddpo", "dpo_no_dsft", "evaluate"]
    assert zephyr.stages_to_run(stages, set(stages) - {"ddpo"}, set()) == ["ddpo", "evaluate"]
    assert zephyr.stages_to_run(stages, set(stages), {"dsft"}) == ["dsft", "aif", "ddpo", "dpo_no_dsft", "evaluate"]


# ----- one quick run of the whole recipe -------------------------------------------------------
@pytest.mark.slow
def test_quick_pipeline_runs_end_to_end_and_rerun_skips(tmp_path, capsys):
    zephyr = load_run_module()
    out = str(tmp_path / "zephyr")
    summary = zephyr.main(["--quick", "--out", out])
    stages = [s for s in zephyr.STAGES if s != "sft_mixed"]  # the quick pool has no sft_mixed member
    assert not os.path.exists(zephyr.marker(out, "sft_mixed"))
    for stage in stages:
        assert os.path.exists(zephyr.marker(out, stage)), stage
    # Each stage read the previous one's output by path.
    assert summary["aif"]["models"][0] == os.path.join(out, "dsft", "model")
    pairs = load_from_disk(os.path.join(out, "aif", "dataset"))
    assert pairs["train"].num_rows + pairs["validation"].num_rows == summary["aif"]["report"]["pairs"] > 50
    models = summary["evaluate"]["models"]
    # dSFT distils the teacher: its samples score far above the untrained base's.
    assert models["dsft"]["reward"] > models["base"]["reward"] + 0.1
    # dDPO moved away from its dSFT start, but stays far closer to it than DPO from the base does.
    assert 0.01 < models["ddpo"]["kl_to_dsft"] < models["dpo_no_dsft"]["kl_to_dsft"]
    # ... and ranks held-out AIF pairs better than chance.
    assert summary["ddpo"]["metrics"]["val/rewards/accuracies"] > 0.5
    assert "| ddpo |" in open(os.path.join(out, "evaluate", "results.md")).read()

    mtimes = {stage: os.path.getmtime(zephyr.marker(out, stage)) for stage in stages}
    capsys.readouterr()
    zephyr.main(["--quick", "--out", out])
    printed = capsys.readouterr().out
    assert all(f"skip {stage}" in printed for stage in stages) and "zephyr: run" not in printed
    assert {stage: os.path.getmtime(zephyr.marker(out, stage)) for stage in stages} == mtimes

    zephyr.main(["--quick", "--out", out, "--force", "evaluate"])
    assert os.path.getmtime(zephyr.marker(out, "evaluate")) > mtimes["evaluate"]
    assert all(os.path.getmtime(zephyr.marker(out, s)) == mtimes[s] for s in stages if s != "evaluate")


# ----- embedded configs (fast_dev_run) ---------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_aif(tmp_path_factory):
    from lit_align.data.aif import run_aif

    out = str(tmp_path_factory.mktemp("zephyr_aif") / "dataset")
    run_aif(["embedded:tiny", "embedded:micro"], out, num_prompts=24, num_val_prompts=8, max_new_tokens=8, max_prompt_length=16, progress=False)
    return out


@pytest.mark.parametrize("configs", [["dsft.yaml"], ["dsft.yaml", "sft_mixed.yaml"], ["ddpo.yaml"]], ids=lambda c: "+".join(c))
def test_embedded_stage_configs_run(configs, tiny_aif, tmp_path):
    args = ["fit", "--config", BASE, *[a for c in configs for a in ("--config", os.path.join(CONFIGS, c))]]
    args += ["--model.init_args.model=embedded:tiny", "--data.init_args.num_examples=24", "--data.init_args.num_val_examples=8", "--data.init_args.batch_size=4", "--trainer.fast_dev_run=1", "--trainer.enable_progress_bar=false"]
    if configs == ["ddpo.yaml"]:
        args.append(f"--data.init_args.dataset={tiny_aif}")
    cli = run_cli(args, str(tmp_path))
    assert cli.trainer.state.finished and cli.trainer.global_step == 1
    expected = {"dsft.yaml": "embedded:teacher", "sft_mixed.yaml": "embedded:demonstrations", "ddpo.yaml": tiny_aif}[configs[-1]]
    assert cli.datamodule.dataset == expected


def test_embedded_aif_config_parses():
    from lit_align.aif import main

    with pytest.raises(SystemExit):
        main(["--config", os.path.join(CONFIGS, "aif.yaml"), "--models", "[embedded:tiny, embedded:micro]", "--out", "unused", "--print_config"])


# ----- real-data configs on small local files in the published schema -------------------------
def test_ultrachat_config_trains_on_the_last_assistant_turn():
    data = SFTDataModule(**data_settings("ultrachat_dsft.yaml", dataset=ULTRACHAT, num_workers=0, batch_size=2, max_length=128, max_prompt_length=96))
    data.setup()
    rows = [json.loads(line) for line in open(ULTRACHAT)]
    assert data.reports["train"].total == len(rows) and len(data.train_examples) == len(rows)
    tokenizer = data.tokenizer
    for row, example in zip(rows, data.train_examples):
        # Earlier turns form the prompt (chat template); the last assistant turn is the target, ending in EOS.
        assert example["prompt_text"] == tokenizer.apply_chat_template(row["messages"][:-1], tokenize=False, add_generation_prompt=True)
        assert example["completion_ids"][-1] == tokenizer.eos_token_id
    multi_turn = next(i for i, r in enumerate(rows) if len(r["messages"]) == 4)
    assert rows[multi_turn]["messages"][1]["content"] in data.train_examples[multi_turn]["prompt_text"]


def test_ultrafeedback_config_reads_conversation_pairs():
    data = PairwiseDataModule(**data_settings("ultrafeedback_ddpo.yaml", dataset=ULTRAFEEDBACK, num_workers=0, batch_size=2, max_length=128, max_prompt_length=96))
    data.setup()
    rows = [json.loads(line) for line in open(ULTRAFEEDBACK)]
    assert len(data.train_examples) == len(rows)
    tokenizer = data.tokenizer
    for row, example in zip(rows, data.train_examples):
        # The string prompt is rendered as the user turn the conversations start with.
        assert example["prompt_text"] == tokenizer.apply_chat_template(row["chosen"][:1], tokenize=False, add_generation_prompt=True)
        assert example["chosen_ids"] != example["rejected_ids"]


@pytest.mark.parametrize(
    "config,dataset",
    [("ultrachat_dsft.yaml", ULTRACHAT), ("ultrafeedback_ddpo.yaml", ULTRAFEEDBACK)],
)
def test_real_data_configs_run_on_local_files(config, dataset, tmp_path):
    cli = run_cli(
        [
            "fit", "--config", BASE, "--config", os.path.join(CONFIGS, config),
            "--model.init_args.model=embedded:tiny", "--model.init_args.dtype=null", "--model.init_args.gradient_checkpointing=false",
            f"--data.init_args.dataset={dataset}", "--data.init_args.num_workers=0", "--data.init_args.batch_size=2",
            "--data.init_args.max_length=128", "--data.init_args.max_prompt_length=96",
            "--trainer.precision=32-true", "--trainer.accumulate_grad_batches=1", "--trainer.fast_dev_run=1", "--trainer.enable_progress_bar=false",
        ],
        str(tmp_path),
    )
    assert cli.trainer.state.finished and cli.trainer.global_step == 1


def test_ultrafeedback_aif_config_with_a_reward_model_judge(tmp_path):
    from lit_align.aif import main

    out = str(tmp_path / "aif")
    args = ["--config", os.path.join(CONFIGS, "ultrafeedback_aif.yaml"), "--models", "[embedded:tiny, embedded:micro]", "--judge.init_args.model", make_tiny_reward_model(tmp_path / "rm")]
    args += ["--judge.init_args.dtype=null", "--judge.init_args.device=cpu", f"--prompts={ULTRAFEEDBACK}", "--num_val_prompts=3", "--max_new_tokens=6", "--dtype=null", "--device=cpu", "--out", out, "--progress=false"]
    main(args)
    pairs = load_from_disk(out)
    report = json.load(open(os.path.join(out, "aif_report.json")))["report"]
    assert report["prompts"] == 9 and pairs["train"].num_rows + pairs["validation"].num_rows == report["pairs"] >= 1
    # chat_template: always -> prompts are stored as the user turn the pool saw; dDPO reads them back.
    assert pairs["train"][0]["prompt"][0]["role"] == "user"
    data = PairwiseDataModule(**data_settings("ultrafeedback_ddpo.yaml", dataset=out, split="train", val_split="validation", num_workers=0, batch_size=2, max_length=64, max_prompt_length=48))
    data.setup()
    assert len(data.train_examples) == pairs["train"].num_rows
