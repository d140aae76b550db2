"""The one encoding path of every DataModule (lit_align.data.encoding) and the model-length check
the DataModule makes from its own ``model`` (no trainer, no LightningModule)."""

from __future__ import annotations

import json

import pytest
from transformers import LlamaConfig

from lit_align.data.best_of_n import BestOfNDataModule
from lit_align.data.model_limits import max_positions
from lit_align.data.sft import SFTDataModule
from lit_align.data.tokenize import DataError, DataReport
from lit_align.modeling import load_tokenizer


def write_jsonl(path, rows):
    path.write_text("\n".join(json.dumps(r) for r in rows))
    return str(path)


def test_encode_example_truncates_a_list_of_completions_together_and_measures_the_longest():
    dm = BestOfNDataModule(dataset="embedded:prompts", max_length=12, max_prompt_length=4)
    dm.tokenizer = load_tokenizer("embedded:tiny")
    from lit_align.data.tokenize import PromptCompletionEncoder

    dm.encoder = PromptCompletionEncoder(dm.tokenizer, 12, 4)
    report = DataReport()
    example = dm.encode_example("sadly , the plot felt very", {"completion": ["great .", "good and clever and moving and fresh and fine ."]}, report, rewards=[1.0, 0.5])
    assert sorted(example) == ["completion_ids", "prompt_ids", "prompt_text", "rewards"]
    assert len(example["prompt_ids"]) == 4 and report.prompt_truncated == 1  # BOS + the last 3 prompt tokens
    short, long = example["completion_ids"]
    assert long[-1] != dm.tokenizer.eos_token_id and len(long) == 12 - 4 and report.completion_truncated == 1
    assert short == dm.encoder.encode_completion("x", "great .")  # the short one is left whole
    assert dm.example_length(example) == 12  # prompt + the longest completion, not + the number of completions
    assert dm.encode_example("the film was", {}, report) == {"prompt_ids": dm.encoder.encode_prompt("the film was"), "prompt_text": "the film was"}


def test_sft_conversations_follow_the_shared_rules(tmp_path):
    rows = [
        {"messages": [{"role": "user", "content": "the film was"}, {"role": "assistant", "content": "great ."}]},
        {"messages": [{"role": "user", "content": "the plot was"}, {"role": "assistant", "content": "   "}]},  # empty answer: dropped, as in pairwise/KTO data
        {"messages": [{"role": "assistant", "content": "great ."}]},  # nothing before the answer: no prompt
    ]
    dm = SFTDataModule(dataset=write_jsonl(tmp_path / "chat.jsonl", rows), val_split="train", batch_size=1, chat_template="never")
    dm.setup("fit")
    report = dm.reports["train"]
    assert report.kept == 1 and dict(report.dropped) == {"empty completion": 1, "empty prompt": 1}
    assert dm.train_examples[0]["prompt_text"] == "the film was"


def test_max_length_is_checked_against_the_datamodules_own_model(tmp_path):
    folder = tmp_path / "model"
    load_tokenizer("embedded:tiny").save_pretrained(folder)
    LlamaConfig(max_position_embeddings=40).save_pretrained(folder)
    assert max_positions(str(folder)) == 40 and max_positions("embedded:micro") == 128
    assert max_positions(str(tmp_path / "tokenizer-only")) is None  # unreadable: left to the model loader's own error
    data = write_jsonl(tmp_path / "sft.jsonl", [{"prompt": "the film was", "completion": "great ."}] * 2)
    with pytest.raises(DataError, match=r"max_length=48 exceeds the model's max_position_embeddings=40; set data.init_args.max_length <= 40"):
        SFTDataModule(model=str(folder), dataset=data, val_split="train", batch_size=1, max_length=48, max_prompt_length=16).setup()
    SFTDataModule(model=str(folder), dataset=data, val_split="train", batch_size=1, max_length=40, max_prompt_length=16).setup()
