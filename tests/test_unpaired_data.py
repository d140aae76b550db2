"""Unpaired binary feedback for KTO: loading, label checks, unpairing, ratio subsampling, mismatched pairs."""

from __future__ import annotations

import json

import pytest
import torch
from datasets import Dataset

from lit_align.data.tokenize import DataError
from lit_align.data.unpaired import UnpairedDataModule, mismatch_shift, parse_label, ratio_subsample, unpair

GOOD = ["good", "great", "superb", "lovely", "charming", "fresh"]
BAD = ["bad", "dull", "awful", "boring", "messy", "weak"]


def write_jsonl(path, rows) -> str:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


def unpaired_rows(n: int) -> list[dict]:
    return [{"prompt": f"the plot {'was' if i % 2 else 'felt'}", "completion": f"very {GOOD[i % 6] if i % 3 else BAD[i % 6]} .", "label": bool(i % 3)} for i in range(n)]


def datamodule(path: str, **kwargs) -> UnpairedDataModule:
    kwargs = {"model": "embedded:tiny", "dataset": path, "val_split": "train", "max_length": 24, "max_prompt_length": 8, "batch_size": 4, **kwargs}
    dm = UnpairedDataModule(**kwargs)
    dm.setup("fit")
    return dm


def test_unpair_interleaves_chosen_and_rejected():
    rows = Dataset.from_list([{"prompt": "a", "chosen": "c1", "rejected": "r1", "score": 1.0}, {"prompt": "b", "chosen": "c2", "rejected": "r2", "score": 0.0}])
    out = unpair(rows).to_list()
    assert out == [
        {"prompt": "a", "completion": "c1", "label": True},
        {"prompt": "a", "completion": "r1", "label": False},
        {"prompt": "b", "completion": "c2", "label": True},
        {"prompt": "b", "completion": "r2", "label": False},
    ]


def test_ratio_subsample_reaches_the_ratio():
    labels = [True] * 100 + [False] * 100
    keep = ratio_subsample(labels, 0.1, seed=0)
    kept = [labels[i] for i in keep]
    assert kept.count(True) == 10 and kept.count(False) == 100
    keep = ratio_subsample(labels, 4.0, seed=0)
    kept = [labels[i] for i in keep]
    assert kept.count(True) == 100 and kept.count(False) == 25
    assert keep == sorted(keep) and ratio_subsample(labels, 4.0, seed=0) == keep  # ordered, seeded
    assert ratio_subsample([True] * 5, 0.5) == list(range(5))  # one kind only: nothing to balance


@pytest.mark.parametrize("value", ["yes", "true", 2, -1, 0.5, [True]])
def test_non_boolean_labels_are_rejected(value):
    with pytest.raises(DataError, match="row 7: field 'label'"):
        parse_label(value, "data.jsonl [train] row 7")


def test_label_parsing_accepts_bools_and_01():
    assert [parse_label(v, "x") for v in (True, False, 1, 0, 1.0, None, float("nan"))] == [True, False, True, False, True, None, None]


@pytest.mark.parametrize("labels, row", [(["yes", "no", "yes", "no"], 0), ([1, 0, 2, 1], 2)])
def test_datamodule_rejects_non_boolean_label_naming_the_row(tmp_path, labels, row):
    rows = [{**r, "label": label} for r, label in zip(unpaired_rows(4), labels)]
    with pytest.raises(DataError, match=rf"\[train\] row {row}: field 'label' must be a boolean"):
        datamodule(write_jsonl(tmp_path / "data.jsonl", rows))


def test_datamodule_loads_text_and_chat_rows(tmp_path):
    rows = unpaired_rows(6) + [{"prompt": None, "completion": "x", "label": True}]
    dm = datamodule(write_jsonl(tmp_path / "data.jsonl", rows))
    assert len(dm.train_examples) == 6 and dm.reports["train"].dropped["missing prompt"] == 1
    assert dm.label_counts() == (4, 2)
    chat = [{"prompt": [{"role": "user", "content": "the plot was"}], "completion": [{"role": "assistant", "content": "very good ."}], "label": True},
            {"completion": [{"role": "user", "content": "the plot was"}, {"role": "assistant", "content": "dull ."}], "label": False}]
    dm = datamodule(write_jsonl(tmp_path / "chat.jsonl", chat), batch_size=2)
    first, second = dm.train_examples
    assert first["prompt_ids"] == second["prompt_ids"]  # both rendered with the chat template
    assert dm.tokenizer.decode(second["completion_ids"]) == "dull . </s>"


def test_pairwise_file_is_unpaired_and_subsampled(tmp_path):
    pairs = [{"question": f"the plot {w}", "good": f"very {GOOD[i]} .", "bad": f"very {BAD[i]} ."} for i, w in enumerate(["was", "is", "felt", "seemed", "looked", "sounded"])]
    path = write_jsonl(tmp_path / "pairs.jsonl", pairs)
    dm = datamodule(path, columns={"prompt": "question", "chosen": "good", "rejected": "bad"})
    assert dm.label_counts() == (6, 6)  # auto-detected as pairwise
    dm = datamodule(path, columns={"prompt": "question", "chosen": "good", "rejected": "bad"}, desirable_ratio=0.5)
    assert dm.label_counts() == (3, 6)
    assert dm.reports["train"].dropped["subsampled to desirable_ratio=0.5"] == 3
    assert len(dm.val_examples) == 12  # validation is never subsampled


def test_batch_size_one_is_refused():
    with pytest.raises(ValueError, match="batch_size"):
        UnpairedDataModule(model="embedded:tiny", batch_size=1)


@pytest.mark.parametrize("size", [2, 3, 5])
def test_mismatched_pairs_never_meet_their_own_prompt(tmp_path, size):
    rows = [{"prompt": f"the {s} was", "completion": f"{GOOD[i]} and {BAD[i]} .", "label": i % 2 == 0} for i, s in enumerate(["plot", "film", "movie", "cast", "music"][:size])]
    dm = datamodule(write_jsonl(tmp_path / "data.jsonl", rows), batch_size=size)
    batch = dm.collate(dm.train_examples)
    assert batch.num_examples == size and batch.input_ids.shape[0] == 2 * size
    assert batch.labels.dtype == torch.bool and batch.labels.tolist() == [ex["label"] for ex in dm.train_examples]

    def completion(row: int) -> list[int]:
        return batch.input_ids[row][batch.loss_mask[row].bool()].tolist()

    def prompt(row: int) -> list[int]:
        return batch.input_ids[row][batch.attention_mask[row].bool() & ~batch.loss_mask[row].bool()].tolist()

    for i in range(size):
        assert prompt(size + i) == prompt(i)  # mismatched row i keeps prompt i ...
        assert completion(size + i) == completion((i - 1) % size)  # ... with completion i-1
        assert completion(size + i) != completion(i)


def test_duplicate_prompts_are_not_paired_with_their_sibling():
    # Unpaired pairs: rows 2k and 2k+1 share a prompt; the rotation by 1 would pair siblings.
    prompts = [[1, 5], [1, 5], [1, 6], [1, 6], [1, 7], [1, 7]]
    k = mismatch_shift(prompts)
    assert k == 2 or k == 3
    assert all(prompts[i] != prompts[(i - k) % 6] for i in range(6))
    assert mismatch_shift([[1, 5]] * 3) == 1  # impossible to avoid: still never the same example
    assert mismatch_shift([[1, 5]]) == 0


def test_single_example_batch_has_no_mismatched_rows(tmp_path):
    dm = datamodule(write_jsonl(tmp_path / "data.jsonl", unpaired_rows(3)), batch_size=2)
    batch = dm.collate(dm.train_examples[:1])
    assert batch.num_examples == 1 and batch.input_ids.shape[0] == 1


def test_long_borrowed_completion_is_cut_to_max_length(tmp_path):
    rows = [{"prompt": "the plot was", "completion": " ".join(GOOD * 3) + " .", "label": True}, {"prompt": "sadly , the plot was", "completion": "dull .", "label": False}]
    dm = datamodule(write_jsonl(tmp_path / "data.jsonl", rows), batch_size=2, max_length=20)
    batch = dm.collate(dm.train_examples)
    assert int(batch.attention_mask.sum(-1).max()) <= 20


def kl_row(batch, row: int) -> list[int]:
    """The completion tokens of mismatched row ``row`` (rows [B, 2B) of the batch)."""
    return batch.input_ids[batch.num_examples + row][batch.loss_mask[batch.num_examples + row].bool()].tolist()


def test_borrowed_completion_is_lent_uncut_then_cut_to_max_length(tmp_path):
    """Too short, next to too long: a long-prompt row lends its completion to a short prompt. TRL
    lends the whole completion and cuts the KL row to max_length; cutting the lender's completion to
    fit the lender's own prompt first would leave the KL row short (issue 23 item 7)."""
    long_prompt = "sadly , the plot and the film and the cast was"  # cut to max_prompt_length 8
    long_completion = " ".join(GOOD * 3) + " ."
    rows = [{"prompt": long_prompt, "completion": long_completion, "label": True}, {"prompt": "the plot was", "completion": "dull .", "label": False}]
    dm = datamodule(write_jsonl(tmp_path / "data.jsonl", rows), batch_size=2, max_length=20)
    lender, borrower = dm.train_examples
    full = dm.encoder.encode_completion(long_prompt, long_completion)
    assert len(lender["completion_ids"]) == 20 - 8 < len(full)  # cut to fit its own (long) prompt
    batch = dm.collate(dm.train_examples)
    budget = 20 - len(borrower["prompt_ids"])
    assert kl_row(batch, 1) == full[:budget]  # the whole completion, cut only by max_length
    assert len(kl_row(batch, 1)) > len(lender["completion_ids"])  # longer than the lender's own cut (the bug)
    assert kl_row(batch, 0) == borrower["completion_ids"]  # a short completion is lent as it is
    assert int(batch.attention_mask.sum(-1).max()) <= 20  # and nothing exceeds max_length (the too-long case)


@pytest.mark.parametrize(("kl_shift", "expected"), [(None, 2), (1, 1), (3, 3), (5, 1)])
def test_kl_shift_setting(tmp_path, kl_shift, expected):
    """Unpaired pairs hold each prompt twice side by side: by default the shift skips the sibling (2);
    kl_shift 1 reproduces TRL's fixed shift by one; k >= B falls back to k mod B (or 1 when that is 0)."""
    pairs = [{"prompt": f"the plot {w}", "chosen": "very good .", "rejected": "very dull ."} for w in ["was", "is"]]
    dm = datamodule(write_jsonl(tmp_path / "pairs.jsonl", pairs), kl_shift=kl_shift)
    examples = dm.train_examples[:4]
    batch = dm.collate(examples)
    k = expected % len(examples) or 1
    for i in range(len(examples)):
        assert kl_row(batch, i) == examples[(i - k) % len(examples)]["completion_ids"]


def test_kl_shift_must_be_positive():
    with pytest.raises(ValueError, match="kl_shift must be an integer in \\[1, inf\\), got 0"):
        UnpairedDataModule(model="embedded:tiny", kl_shift=0)


def test_eval_prompts_are_distinct(tmp_path):
    pairs = [{"prompt": f"the plot {w}", "chosen": "very good .", "rejected": "very dull ."} for w in ["was", "is", "felt"]]
    (tmp_path / "pairs.jsonl").write_text("".join(json.dumps(p) + "\n" for p in pairs))
    dm = datamodule(str(tmp_path / "pairs.jsonl"))
    assert len(dm.val_examples) == 6  # each prompt twice, once per side
    assert [text for text, _ in dm.eval_prompts(64)] == ["the plot was", "the plot is", "the plot felt"]
    assert len(dm.eval_prompts(2)) == 2
