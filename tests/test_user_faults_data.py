"""The data- and model-side faults users hit (issue 24, item 3), each through the CLI entry point
(``lit_align.cli.cli_main``: the exit status and the one-paragraph message a user sees).

Models are the tiny GPT-2-style checkpoint of tests/families.py, copied and damaged per case;
data are a few rows written per test.
"""

from __future__ import annotations

import json
import logging
import os
import shutil

import pytest

from lit_align.cli import cli_main
from lit_align.data.dedup import row_key
from lit_align.data.pairwise import PairwiseDataModule
from tests.conftest import cli_in_process
from tests.families import family_checkpoints  # noqa: F401  (fixture)

PAIR = {"prompt": "the film was", "chosen": "great and fresh .", "rejected": "dull and cold ."}


def pairs(n: int) -> list[dict]:
    return [{**PAIR, "prompt": f"the film number {i} was"} for i in range(n)]


def write_jsonl(path, rows) -> str:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


def fit_args(model: str, dataset: str, root: str, *extra: str) -> list[str]:
    """One DPO step of batch 2, no logger, checkpoints, export or sampled evaluation."""
    return [
        "fit", "--model", "lit_align.algorithms.DPO", "--model.model", model, "--data", "lit_align.data.pairwise.PairwiseDataModule",
        "--data.dataset", dataset, "--data.batch_size", "2", "--data.max_length", "32", "--data.max_prompt_length", "16",
        "--trainer.logger", "false", "--trainer.default_root_dir", root, "--trainer.max_steps", "1", "--trainer.limit_val_batches", "1",
        "--trainer.num_sanity_val_steps", "0", "--trainer.enable_checkpointing", "false", "--trainer.enable_progress_bar", "false",
        "--trainer.enable_model_summary", "false", "--trainer.callbacks", "[]", *extra,
    ]  # fmt: skip


def refused(args: list[str], capsys) -> str:
    """Run the CLI, expect exit status 1 and one ``lit_align: error:`` paragraph; return it."""
    with pytest.raises(SystemExit) as exit_info:
        cli_main(args)
    assert exit_info.value.code == 1
    stderr = capsys.readouterr().err
    assert "Traceback" not in stderr, stderr[-3000:]
    return next(line for line in stderr.splitlines() if line.startswith("lit_align: error:"))


def damaged_copy(family_checkpoints, tmp_path, name: str) -> str:  # noqa: F811
    folder = str(tmp_path / name)
    shutil.copytree(family_checkpoints["models"]["gpt2"], folder)
    return folder


# ----- the model folder and its tokenizer ------------------------------------------------------------
def test_folder_without_tokenizer_files_is_refused_not_trained_on(family_checkpoints, tmp_path, monkeypatch, capsys):  # noqa: F811
    """transformers 5 builds an empty one-token tokenizer here; the run used to train on nothing and exit 0."""
    folder = damaged_copy(family_checkpoints, tmp_path, "no_tokenizer")
    for name in os.listdir(folder):
        if name.startswith(("tokenizer", "vocab", "merges", "special_tokens")):
            os.remove(os.path.join(folder, name))
    data = write_jsonl(tmp_path / "pairs.jsonl", pairs(4))
    # What the user runs: ``cli_main``, in-process (the exit status is the point).
    monkeypatch.chdir(tmp_path)
    code, _, err = cli_in_process(capsys, *fit_args(folder, data, str(tmp_path)))
    assert code == 1, err[-3000:]
    assert "Traceback" not in err
    error = next(line for line in err.splitlines() if line.startswith("lit_align: error:"))
    assert "encodes text to no tokens" in error and "vocabulary of 1 token(s)" in error and "tokenizer.save_pretrained" in error, error


def test_tokenizer_larger_than_the_embedding_is_refused_up_front(family_checkpoints, tmp_path, capsys):  # noqa: F811
    from transformers import AutoTokenizer

    folder = damaged_copy(family_checkpoints, tmp_path, "big_tokenizer")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    rows = len(tokenizer)
    tokenizer.add_tokens(["extra_one", "extra_two"])  # added without resizing the model
    tokenizer.save_pretrained(folder)
    error = refused(fit_args(folder, write_jsonl(tmp_path / "pairs.jsonl", pairs(4)), str(tmp_path)), capsys)
    assert f"has {rows + 2} tokens but the model's embedding has only {rows} rows" in error and "resize_token_embeddings" in error, error


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_corrupt_safetensors_is_one_paragraph(family_checkpoints, tmp_path, capsys, damage):  # noqa: F811
    folder = damaged_copy(family_checkpoints, tmp_path, "corrupt")
    weights = os.path.join(folder, "model.safetensors")
    content = open(weights, "rb").read()
    with open(weights, "wb") as f:
        f.write(content[: len(content) // 2] if damage == "truncated" else b"\x13" * 64)
    error = refused(fit_args(folder, write_jsonl(tmp_path / "pairs.jsonl", pairs(4)), str(tmp_path)), capsys)
    assert f"the weights file {weights} is corrupt or incomplete" in error and "download it again" in error, error


@pytest.mark.parametrize("trust", [False, True])
def test_auto_map_to_unknown_code_is_one_paragraph(family_checkpoints, tmp_path, capsys, trust):  # noqa: F811
    folder = damaged_copy(family_checkpoints, tmp_path, "custom")
    config_path = os.path.join(folder, "config.json")
    config = json.load(open(config_path))
    config.update(model_type="my_model", auto_map={"AutoConfig": "my_model.MyConfig", "AutoModelForCausalLM": "my_model.MyModel"})
    json.dump(config, open(config_path, "w"))
    args = fit_args(folder, write_jsonl(tmp_path / "pairs.jsonl", pairs(4)), str(tmp_path), "--model.trust_remote_code", str(trust).lower())
    error = refused(args, capsys)
    assert "my_model.MyModel" in error, error
    if trust:
        assert "the folder has no my_model.py" in error, error
    else:
        assert "which transformers does not know" in error and "trust_remote_code: true" in error, error


# ----- the data ------------------------------------------------------------------------------------
def test_pairs_identical_after_truncation_are_dropped_and_counted(family_checkpoints, tmp_path, capsys):  # noqa: F811
    """The identity check ran on the text, before truncation: 40/40 such pairs were trained on."""
    long = " ".join(["great"] * 40)
    rows = [{**row, "chosen": long + " , truly .", "rejected": long + " , sadly ."} for row in pairs(3)]
    path = write_jsonl(tmp_path / "pairs.jsonl", rows)
    error = refused(fit_args(family_checkpoints["models"]["gpt2"], path, str(tmp_path)), capsys)
    assert "pairs.jsonl [train]: no usable examples left" in error and "dropped 2 (chosen identical to rejected after truncation)" in error, error
    # Mixed with usable pairs: only the identical ones go, counted.
    module = PairwiseDataModule(model=family_checkpoints["models"]["gpt2"], dataset=write_jsonl(tmp_path / "mixed.jsonl", rows + pairs(2)), val_split="train", max_length=32, max_prompt_length=16, batch_size=1)
    module.setup()
    assert module.reports["train"].kept == 2 and module.reports["train"].dropped == {"chosen identical to rejected after truncation": 3}


def test_zero_width_text_is_empty(family_checkpoints, tmp_path, capsys):  # noqa: F811
    base = pairs(6)
    rows = [{**base[0], "chosen": "\u200b"}, {**base[1], "rejected": " \u200b\u200d\ufeff "}, {**base[2], "prompt": "\u2060"}]
    rows += [{**base[3], "chosen": "\u200b"}, {**base[4], "rejected": "\u200b"}, {**base[5], "prompt": "\u2060"}]
    error = refused(fit_args(family_checkpoints["models"]["gpt2"], write_jsonl(tmp_path / "pairs.jsonl", rows), str(tmp_path), "--data.val_split", "train"), capsys)
    assert "kept 0/6 examples" in error, error
    for field, n in (("chosen", 2), ("rejected", 2), ("prompt", 2)):
        assert f"dropped {n} (empty {field} (invisible characters only))" in error, error


@pytest.mark.parametrize(("name", "content", "what"), [("blank.jsonl", "\n\n   \n", "only blank lines"), ("header.csv", "prompt,chosen,rejected\n", "only a header line")])
def test_file_without_rows_names_the_file(family_checkpoints, tmp_path, capsys, name, content, what):  # noqa: F811
    path = tmp_path / name
    path.write_text(content)
    error = refused(fit_args(family_checkpoints["models"]["gpt2"], str(path), str(tmp_path)), capsys)
    assert f"{path}: the file has {what}" in error and "corresponds to no data" not in error and "Give a local file" not in error, error


def test_duplicates_stay_out_of_validation_and_are_reported(family_checkpoints, tmp_path, caplog):  # noqa: F811
    """8 of 10 held-out rows were also in train when the split was by row, not by distinct row."""
    distinct = pairs(10)
    rows = distinct + distinct[:6] * 2  # 12 duplicates
    path = write_jsonl(tmp_path / "pairs.jsonl", rows)
    with caplog.at_level(logging.INFO):
        cli_main(fit_args(family_checkpoints["models"]["gpt2"], path, str(tmp_path), "--data.val_fraction", "0.3"))
    assert "12 duplicate row(s) (identical to an earlier row)" in caplog.text
    dm = PairwiseDataModule(model=family_checkpoints["models"]["gpt2"], dataset=path, val_fraction=0.3, batch_size=2)
    train, validation = dm.load_splits()
    train_keys = {row_key(r) for r in train}
    assert len(validation) == 3 and not any(row_key(r) in train_keys for r in validation)  # no leak
    assert len({row_key(r) for r in validation}) == 3  # each held-out row once
    assert dm.duplicate_rows == 12 and len(train) + len(validation) + dm.duplicates_left_out == len(rows)
