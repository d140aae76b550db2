"""BestOfNDataModule: offline rows, online sampling (seeded), bad input, and the batch's Best-of-N pick."""

from __future__ import annotations

import json

import pytest
import torch

from lit_align.data.batches import BestOfNBatch
from lit_align.data.best_of_n import BestOfNDataModule, build_best_of_n_rows
from lit_align.data.tokenize import DataError
from lit_align.online.generation import SamplingSettings
from lit_align.modeling import load_causal_lm, load_tokenizer
from lit_align.rewards import LexiconSentimentReward

ROWS = [
    {"prompt": "the film was", "completions": ["great .", "awful .", "good and dull ."], "rewards": [1.0, -1.0, 0.0]},
    {"prompt": "sadly , the plot felt", "completions": ["boring .", "clever and moving .", "weak ."], "rewards": [-1.0, 1.0, -0.5]},
    {"prompt": "the cast was", "completions": ["fine", "great ."], "rewards": [0.0, 1.0]},  # fewer than N=3: dropped
]


def write_jsonl(path, rows):
    path.write_text("\n".join(json.dumps(r) for r in rows))
    return str(path)


def make(tmp_path, rows=ROWS, **kwargs) -> BestOfNDataModule:
    dm = BestOfNDataModule(dataset=write_jsonl(tmp_path / "bon.jsonl", rows), val_split="train", num_samples=3, batch_size=2, max_length=32, max_prompt_length=16, **kwargs)
    dm.setup("fit")
    return dm


def test_offline_rows_become_batches_with_best_of_n(tmp_path):
    dm = make(tmp_path)
    assert dm.resolved_mode == "offline"
    assert dm.reports["train"].kept == 2 and dm.reports["train"].dropped["fewer than num_samples=3 completions"] == 1
    batch = dm.collate(dm.train_examples)
    assert isinstance(batch, BestOfNBatch) and len(batch) == 2 and batch.num_samples == 3
    assert batch.rewards.tolist() == [[1.0, -1.0, 0.0], [-1.0, 1.0, -0.5]]
    decoded = [dm.tokenizer.decode(c, skip_special_tokens=True) for c in batch.best_completions()]
    assert decoded == ["great .", "clever and moving ."]
    assert all(c[-1] == dm.tokenizer.eos_token_id for per_prompt in batch.completion_ids for c in per_prompt)


def test_offline_bad_rows_get_clear_errors(tmp_path):
    bad = [{"prompt": "the film was", "completions": ["great .", "bad ."], "rewards": [1.0]}]
    with pytest.raises(DataError, match=r"row 0.*2 completions but 1 rewards"):
        BestOfNDataModule(dataset=write_jsonl(tmp_path / "b.jsonl", bad), val_split="train", num_samples=2).setup("fit")
    not_list = [{"prompt": "the film was", "completions": "great .", "rewards": 1.0}]
    with pytest.raises(DataError, match="must be lists"):
        BestOfNDataModule(dataset=write_jsonl(tmp_path / "c.jsonl", not_list), val_split="train", num_samples=2).setup("fit")
    with pytest.raises(DataError, match="missing column"):
        BestOfNDataModule(dataset=write_jsonl(tmp_path / "d.jsonl", [{"text": "x"}]), val_split="train").setup("fit")


def test_columns_can_be_mapped(tmp_path):
    rows = [{"question": r["prompt"], "samples": r["completions"], "scores": r["rewards"]} for r in ROWS[:2]]
    dm = BestOfNDataModule(dataset=write_jsonl(tmp_path / "m.jsonl", rows), val_split="train", num_samples=2, batch_size=2, columns={"prompt": "question", "completions": "samples", "rewards": "scores"})
    dm.setup("fit")
    assert dm.resolved_mode == "offline" and dm.collate(dm.train_examples).rewards.shape == (2, 2)


def test_online_data_serves_prompts_and_declares_its_sampling_settings():
    dm = BestOfNDataModule(dataset="embedded:prompts", num_examples=8, num_val_examples=4, num_samples=3, max_new_tokens=8, temperature=0.7, batch_size=4, seed=5)
    dm.setup("fit")
    assert dm.resolved_mode == "online"
    batch = dm.collate(dm.train_examples[:4])
    assert not batch.has_completions and len(batch) == 4 and all(ids[0] == dm.tokenizer.bos_token_id for ids in batch.prompt_ids)
    assert dm.sampling_settings() == SamplingSettings(num_samples=3, max_new_tokens=8, temperature=0.7, seed=5)
    assert not hasattr(dm, "complete") and not hasattr(dm, "sample")  # sampling is the algorithm's (OnlineSampling)


def test_built_offline_rows_round_trip_through_the_datamodule(tmp_path):
    tokenizer = load_tokenizer("embedded:tiny")
    model = load_causal_lm("embedded:micro", tokenizer)
    rows = build_best_of_n_rows(model, tokenizer, ["the film was", "the music is"], LexiconSentimentReward(), num_samples=2, max_new_tokens=6, seed=0)
    assert rows.column_names == ["prompt", "completions", "rewards"] and len(rows[0]["completions"]) == 2
    rows.to_json(str(tmp_path / "built.jsonl"))
    dm = BestOfNDataModule(dataset=str(tmp_path / "built.jsonl"), val_split="train", num_samples=2, batch_size=2)
    dm.setup("fit")
    assert torch.allclose(dm.collate(dm.train_examples).rewards, torch.tensor(rows["rewards"]))
