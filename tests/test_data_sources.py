"""Real loading paths on small local files: json/jsonl/parquet/csv, chat messages, column mapping."""

import json

import datasets
import pytest

from lit_align.data.pairwise import PairwiseDataModule
from lit_align.data.sft import SFTDataModule
from lit_align.embedded.tokenizer import build_tokenizer
from lit_align.modeling import load_causal_lm, load_tokenizer

ROWS = [
    {"prompt": f"the film was number {i}", "chosen": "great and lovely .", "rejected": "dull ."} for i in range(20)
]


def _write(tmp_path, fmt, rows):
    ds = datasets.Dataset.from_list(rows)
    path = tmp_path / f"pairs.{fmt}"
    if fmt == "jsonl":
        path.write_text("\n".join(json.dumps(r) for r in rows))
    elif fmt == "json":
        path.write_text(json.dumps(rows))
    elif fmt == "parquet":
        ds.to_parquet(str(path))
    else:
        ds.to_csv(str(path), index=False)
    return str(path)


@pytest.mark.parametrize("fmt", ["json", "jsonl", "parquet", "csv"])
def test_pairwise_from_local_files(tmp_path, fmt):
    dm = PairwiseDataModule(model="embedded:tiny", dataset=_write(tmp_path, fmt, ROWS), batch_size=4, val_fraction=0.2)
    dm.setup("fit")
    assert len(dm.train_examples) == 16 and len(dm.val_examples) == 4
    batch = next(iter(dm.train_dataloader()))
    assert batch.input_ids.shape[0] == 8 and batch.num_pairs == 4
    tok = dm.tokenizer
    chosen_tokens = tok.convert_ids_to_tokens(batch.input_ids[0][batch.loss_mask[0].bool()].tolist())
    assert chosen_tokens == ["great", "and", "lovely", ".", "</s>"]
    rejected_tokens = tok.convert_ids_to_tokens(batch.input_ids[4][batch.loss_mask[4].bool()].tolist())
    assert rejected_tokens == ["dull", ".", "</s>"]


def test_column_mapping_and_explicit_validation_split(tmp_path):
    rows = [{"question": r["prompt"], "good": r["chosen"], "bad": r["rejected"]} for r in ROWS]
    path = _write(tmp_path, "jsonl", rows)
    dm = PairwiseDataModule(
        model="embedded:tiny", dataset=path, val_split="train", columns={"prompt": "question", "chosen": "good", "rejected": "bad"}
    )
    dm.setup("fit")
    assert len(dm.train_examples) == 20 and len(dm.val_examples) == 20


def test_trl_conversational_pairs_split_prompt_from_conversation(tmp_path):
    user = {"role": "user", "content": "the film was"}
    rows = [
        {"chosen": [user, {"role": "assistant", "content": "great ."}], "rejected": [user, {"role": "assistant", "content": "bad ."}]}
    ] * 4
    dm = PairwiseDataModule(model="embedded:tiny", dataset=_write(tmp_path, "jsonl", rows), val_split="train", batch_size=2)
    dm.setup("fit")
    ex = dm.train_examples[0]
    tok = dm.tokenizer
    assert tok.convert_ids_to_tokens(ex["prompt_ids"]) == ["<s>", "<|user|>", "the", "film", "was", "<|assistant|>"]
    assert tok.convert_ids_to_tokens(ex["chosen_ids"]) == ["great", ".", "</s>"]


def test_sft_from_ultrachat_style_messages(tmp_path):
    rows = [
        {"messages": [{"role": "user", "content": "the plot was"}, {"role": "assistant", "content": "clever ."}]},
    ] * 3
    dm = SFTDataModule(model="embedded:tiny", dataset=_write(tmp_path, "jsonl", rows), val_split="train", batch_size=3)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    completion = batch.input_ids[0][batch.loss_mask[0].bool()].tolist()
    assert dm.tokenizer.convert_ids_to_tokens(completion) == ["clever", ".", "</s>"]


def test_saved_dataset_folder_and_model_by_local_path(tmp_path):
    datasets.DatasetDict({"train": datasets.Dataset.from_list(ROWS), "test": datasets.Dataset.from_list(ROWS[:4])}).save_to_disk(str(tmp_path / "ds"))
    tok = build_tokenizer()
    model = load_causal_lm("embedded:micro", tok)
    model.save_pretrained(tmp_path / "model")
    tok.save_pretrained(tmp_path / "model")
    dm = PairwiseDataModule(model=str(tmp_path / "model"), dataset=str(tmp_path / "ds"), val_split="test")
    dm.setup("fit")
    assert len(dm.val_examples) == 4
    reloaded = load_causal_lm(str(tmp_path / "model"))
    assert sum(p.numel() for p in reloaded.parameters()) == sum(p.numel() for p in model.parameters())
    assert load_tokenizer(str(tmp_path / "model")).get_vocab() == tok.get_vocab()
