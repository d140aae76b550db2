"""Bad-input matrix: each case gives a DataError naming the file/row/field and the fix, or is dropped
and counted in the DataReport (logged as data/<split>/dropped_* and printed) — never a torch traceback."""

from __future__ import annotations

import contextlib
import io
import json
import logging
from types import SimpleNamespace

import pytest

from lit_align.data.pairwise import PairwiseDataModule
from lit_align.data.sft import SFTDataModule
from lit_align.data.tokenize import DataError
from lit_align.modeling import load_tokenizer


def write_jsonl(path, rows) -> str:
    with open(path, "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    return str(path)


def make(cls, path, **kwargs):
    options = dict(dataset=str(path), val_split="validation", batch_size=1, max_length=32, max_prompt_length=16)
    return cls(**{**options, **kwargs})


GOOD_PAIR = {"prompt": "the food was", "chosen": "great and fresh", "rejected": "cold and bland"}
GOOD_SFT = {"prompt": "the food was", "completion": "great and fresh"}


# ----- columns ------------------------------------------------------------------------------------
def test_missing_column_names_file_column_and_mapping_fix(tmp_path):
    path = write_jsonl(tmp_path / "pairs.jsonl", [{"prompt": "p", "chosen": "a", "bad": "b"}])
    with pytest.raises(DataError, match=r"pairs\.jsonl.*missing column\(s\) \['rejected'\].*columns: \{rejected: your_column_name\}"):
        make(PairwiseDataModule, path).setup()


def test_misnamed_column_mapping(tmp_path):
    path = write_jsonl(tmp_path / "pairs.jsonl", [GOOD_PAIR])
    with pytest.raises(DataError, match=r"column mapping names columns that do not exist: \['prompt -> question'\]"):
        make(PairwiseDataModule, path, columns={"prompt": "question"}).setup()


def test_column_mapping_fixes_other_names(tmp_path):
    path = write_jsonl(tmp_path / "sft.jsonl", [{"question": "the food was", "answer": "great"}] * 2)
    module = make(SFTDataModule, path, columns={"prompt": "question", "completion": "answer"})
    module.setup()
    assert len(module.train_examples) == 2


def test_sft_without_completion_or_messages(tmp_path):
    path = write_jsonl(tmp_path / "sft.jsonl", [{"prompt": "p", "response": "r"}])
    with pytest.raises(DataError, match=r"sft\.jsonl.*needs columns prompt\+completion, or messages; available: \['prompt', 'response'\].*columns: \{completion: response\}"):
        make(SFTDataModule, path).setup()


# ----- rows that are dropped and counted ------------------------------------------------------------
def test_empty_fields_and_identical_pairs_are_dropped_counted_and_logged(tmp_path, caplog):
    rows = [
        GOOD_PAIR,
        {**GOOD_PAIR, "prompt": "   "},
        {**GOOD_PAIR, "chosen": ""},
        {**GOOD_PAIR, "rejected": None},
        {**GOOD_PAIR, "rejected": GOOD_PAIR["chosen"]},
        {**GOOD_PAIR, "prompt": float("nan")},
    ]
    module = make(PairwiseDataModule, write_jsonl(tmp_path / "pairs.jsonl", rows))
    logged = {}
    module.trainer = SimpleNamespace(loggers=[SimpleNamespace(log_metrics=lambda m, step: logged.update(m), log_hyperparams=lambda p: logged.update(p))], lightning_module=None)
    module.setup()
    report = module.reports["train"]
    assert (report.total, report.kept) == (6, 1)
    assert dict(report.dropped) == {"empty prompt": 1, "empty chosen": 1, "missing rejected": 1, "chosen identical to rejected": 1, "missing prompt": 1}
    assert logged["data/train/kept"] == 1 and logged["data/train/dropped"] == 5
    assert logged["data/train/dropped_chosen_identical_to_rejected"] == 1 and logged["data/train/dropped_empty_prompt"] == 1
    assert "dropped 1 (chosen identical to rejected)" in logged["data_report"]
    with caplog.at_level(logging.INFO):
        module.teardown("fit")  # the counts are repeated at the end of fit
    assert "data report: " + report.summary() in caplog.text


def test_long_prompts_are_cut_from_the_left_and_counted(tmp_path):
    long_prompt = " ".join(["the food was great"] * 20)  # ~80 tokens > max_length 32
    module = make(SFTDataModule, write_jsonl(tmp_path / "sft.jsonl", [{"prompt": long_prompt, "completion": "great and fresh"}, GOOD_SFT]))
    module.setup()
    report = module.reports["train"]
    assert report.prompt_truncated == 1 and report.kept == 2
    for example in module.train_examples:
        assert len(example["prompt_ids"]) <= 16 and module.example_length(example) <= 32
        assert example["completion_ids"][-1] == module.tokenizer.eos_token_id  # the completion survives whole


def test_nan_in_csv_cell_is_dropped(tmp_path):
    path = tmp_path / "sft.csv"
    path.write_text("prompt,completion\nthe food was,great\nthe room was,\n")
    module = make(SFTDataModule, path)
    module.setup()
    assert module.reports["train"].kept == 1 and sum(module.reports["train"].dropped.values()) == 1


# ----- malformed chat messages ---------------------------------------------------------------------
def test_wrong_role_names_row_field_turn_and_fix(tmp_path):
    conversation = [{"role": "human", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    path = write_jsonl(tmp_path / "chat.jsonl", [{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "ok"}]}, {"messages": conversation}])
    with pytest.raises(DataError, match=r"chat\.jsonl \[train\] row 1, field 'messages': message 0 has role 'human'.*human -> user"):
        make(SFTDataModule, path).setup()


def test_conversation_without_assistant_turn(tmp_path):
    path = write_jsonl(tmp_path / "chat.jsonl", [{"messages": [{"role": "user", "content": "hi"}]}])
    with pytest.raises(DataError, match=r"row 0, field 'messages': conversation must end with an assistant turn.*last turn is 'user'"):
        make(SFTDataModule, path).setup()


def test_pair_without_assistant_turn(tmp_path):
    row = {"chosen": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "a"}], "rejected": [{"role": "user", "content": "hi"}], "prompt": "hi"}
    with pytest.raises(DataError, match=r"row 0, field 'rejected': message list has no assistant turn"):
        make(PairwiseDataModule, write_jsonl(tmp_path / "pairs.jsonl", [row])).setup()


def test_sharegpt_format_gets_a_conversion_hint(tmp_path):
    path = write_jsonl(tmp_path / "chat.jsonl", [{"messages": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "yo"}]}])
    with pytest.raises(DataError, match=r"row 0: field 'messages' must be.*ShareGPT"):
        make(SFTDataModule, path).setup()


# ----- encodings, empty data ------------------------------------------------------------------------
def test_non_utf8_file(tmp_path):
    path = tmp_path / "sft.jsonl"
    path.write_bytes(json.dumps(GOOD_SFT).encode() + b"\n" + '{"prompt": "caf\u00e9", "completion": "ok"}\n'.encode("latin-1"))
    with pytest.raises(DataError, match=r"sft\.jsonl \[train\] row 1: text is not valid UTF-8.*re-encode"):
        make(SFTDataModule, path).setup()


def test_everything_filtered_out(tmp_path):
    path = write_jsonl(tmp_path / "pairs.jsonl", [{**GOOD_PAIR, "rejected": GOOD_PAIR["chosen"]}] * 3)
    with pytest.raises(DataError, match=r"no usable examples left \(.*dropped 3 \(chosen identical to rejected\)\).*columns"):
        make(PairwiseDataModule, path).setup()


def test_empty_file(tmp_path):
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(DataError, match=r"empty\.jsonl"):
        make(SFTDataModule, tmp_path / "empty.jsonl").setup()


def test_fewer_examples_than_batch_size(tmp_path):
    with pytest.raises(DataError, match=r"1 usable example\(s\), fewer than batch_size=4"):
        make(SFTDataModule, write_jsonl(tmp_path / "sft.jsonl", [GOOD_SFT]), batch_size=4).setup()


def test_max_length_beyond_the_model_is_caught_before_torch(tmp_path):
    # Checked against the DataModule's own `model` (its config), with no trainer or LightningModule attached.
    module = make(SFTDataModule, write_jsonl(tmp_path / "sft.jsonl", [GOOD_SFT]), max_length=512, max_prompt_length=16)
    assert module.trainer is None
    with pytest.raises(DataError, match=r"max_length=512 exceeds the model's max_position_embeddings=128"):
        module.setup()


# ----- KTO labels (lit_align/data/unpaired.py) -----------------------------------------------------
def test_kto_label_that_is_not_boolean(tmp_path):
    unpaired = pytest.importorskip("lit_align.data.unpaired", reason="UnpairedDataModule not present")
    path = write_jsonl(tmp_path / "kto.jsonl", [{**GOOD_SFT, "label": True}, {**GOOD_SFT, "label": "yes"}])
    with pytest.raises(DataError, match=r"kto\.jsonl \[train\] row 1.*'label' must be a boolean"):
        make(unpaired.UnpairedDataModule, path, batch_size=2).setup()


# ----- tokenizer and config -----------------------------------------------------------------------
def test_tokenizer_without_pad_token_pads_with_eos(tmp_path):
    tokenizer = load_tokenizer("embedded:tiny")
    tokenizer.pad_token = None
    tokenizer.save_pretrained(tmp_path / "tok")
    loaded = load_tokenizer(str(tmp_path / "tok"))
    assert loaded.pad_token_id == loaded.eos_token_id is not None
    module = make(SFTDataModule, write_jsonl(tmp_path / "sft.jsonl", [GOOD_SFT, {"prompt": "a", "completion": "b"}]), model=str(tmp_path / "tok"), batch_size=2)
    module.setup()
    batch = module.collate(module.train_examples)
    # The real EOS closing each completion stays in the loss; padding (also EOS) is masked out.
    assert int(batch.loss_mask.sum()) == sum(len(ex["completion_ids"]) for ex in module.train_examples)
    assert int(batch.attention_mask.sum()) == sum(module.example_length(ex) for ex in module.train_examples)


def test_tokenizer_without_pad_or_eos_token(tmp_path):
    tokenizer = load_tokenizer("embedded:tiny")
    tokenizer.pad_token = None
    tokenizer.eos_token = None
    tokenizer.save_pretrained(tmp_path / "tok")
    with pytest.raises(ValueError, match=r"neither a pad nor an EOS token; set tokenizer.pad_token"):
        load_tokenizer(str(tmp_path / "tok"))


@pytest.mark.parametrize("how", ["command line", "yaml"])
def test_unknown_class_gives_a_short_message(tmp_path, how):
    from lit_align.cli import main

    if how == "yaml":
        config = tmp_path / "typo.yaml"
        config.write_text("model:\n  class_path: lit_align.algorithms.DPOO\n")
        args, name = ["fit", "--config", str(config)], "DPOO"
    else:
        args, name = ["fit", "--model.class_path=lit_align.algorithms.NoSuch"], "NoSuch"
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr), pytest.raises(SystemExit) as exit_info:
        main(args)
    message = stderr.getvalue()
    assert exit_info.value.code != 0
    assert name in message and "Traceback" not in message
    assert len(message.splitlines()) < 40, message


def test_malformed_json_line(tmp_path):
    path = tmp_path / "sft.jsonl"
    path.write_text(json.dumps(GOOD_SFT) + '\n{"prompt": "a", completion\n')
    with pytest.raises(DataError, match=r"sft\.jsonl: could not parse the file: .*row 1"):
        make(SFTDataModule, path).setup()
