"""AI feedback (Zephyr, arXiv 2310.16944 Sec. 3): chosen = top-scored, rejected = a random lower one."""

from __future__ import annotations

import json
import os
import random
from collections import Counter

import pytest
import torch
from datasets import load_from_disk

from lit_align.data.aif import binarize, build_aif_dataset, run_aif
from lit_align.rewards import HFClassifierReward
from lit_align.data.feedback import select_pair
from lit_align.data.pairwise import PairwiseDataModule
from lit_align.data.tokenize import DataError
from lit_align.rewards import LexiconSentimentReward, RewardFunction


class WordCountJudge(RewardFunction):
    """A user-defined judge plugged by class_path: longer answers win."""

    def __call__(self, prompts, completions):
        return torch.tensor([float(len(c.split())) for c in completions])


# ----- the chosen/rejected rule ---------------------------------------------------------------
def test_chosen_is_top_scored_and_rejected_strictly_lower():
    rng = random.Random(0)
    for _ in range(500):
        scores = [round(rng.uniform(-1, 1), 1) for _ in range(rng.randint(2, 6))]
        pair = select_pair(scores, random.Random(1))
        if len(set(scores)) == 1:
            assert pair is None
            continue
        chosen, rejected = pair
        assert scores[chosen] == max(scores) and chosen == scores.index(max(scores))
        assert scores[rejected] < scores[chosen]


def test_ties_are_deterministic():
    # Two completions tie for the top: the earlier one is chosen, the tie partner is never rejected.
    scores = [0.2, 0.9, 0.9, -0.5]
    draws = {select_pair(scores, random.Random(seed)) for seed in range(50)}
    assert {chosen for chosen, _ in draws} == {1}
    assert {rejected for _, rejected in draws} == {0, 3}
    assert select_pair(scores, random.Random(7)) == select_pair(scores, random.Random(7))
    assert select_pair([0.4, 0.4, 0.4], random.Random(0)) is None


def test_rejected_is_uniform_over_the_others():
    # "a random one of the remaining three" (K = 4): each lower completion about 1/3 of the time.
    rng = random.Random(0)
    counts = Counter(select_pair([0.1, 0.9, 0.5, -0.2], rng)[1] for _ in range(3000))
    assert set(counts) == {0, 2, 3}
    assert all(abs(n / 3000 - 1 / 3) < 0.04 for n in counts.values())


def test_duplicate_of_chosen_text_is_never_rejected():
    # A noisy judge scored the same text twice differently: that copy must not become the rejected side.
    scores, texts = [0.9, 0.3, 0.1], ["great .", "great .", "bad ."]
    assert {select_pair(scores, random.Random(s), keys=texts) for s in range(30)} == {(0, 2)}
    assert select_pair([0.9, 0.3], random.Random(0), keys=["a", "a"]) is None


def test_binarize_ignores_empty_completions_and_records_authors():
    row = binarize("the film was", ["", "good .", "bad ."], [5.0, 1.0, -1.0], ["m0", "m1", "m2"], random.Random(0))
    assert (row["chosen"], row["rejected"], row["model_chosen"], row["model_rejected"]) == ("good .", "bad .", "m1", "m2")
    assert (row["score_chosen"], row["score_rejected"]) == (1.0, -1.0)
    assert row["completions"] == ["", "good .", "bad ."] and row["scores"] == [5.0, 1.0, -1.0]
    assert binarize("p", ["", "x ."], [0.0, 1.0], ["a", "b"], random.Random(0)) == "fewer than two non-empty completions"
    assert binarize("p", ["x .", "y ."], [1.0, 1.0], ["a", "b"], random.Random(0)) == "all completions scored the same"


# ----- the AIF step on the embedded default ---------------------------------------------------
@pytest.fixture(scope="module")
def aif_dir(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("aif") / "pairs")
    run_aif(["embedded:tiny", "embedded:micro", "embedded:tiny"], out, num_prompts=48, num_val_prompts=12, max_new_tokens=10, progress=False)
    return out


def test_written_pairs_follow_the_rule(aif_dir):
    pairs = load_from_disk(aif_dir)
    assert set(pairs) == {"train", "validation"}
    assert len(pairs["train"]) > 30 and len(pairs["validation"]) > 5
    judge = LexiconSentimentReward()
    for row in pairs["train"]:
        assert row["models"] == ["embedded:tiny", "embedded:micro", "embedded:tiny"]
        # The stored scores are the judge's, and chosen is the first of the top-scored non-empty ones.
        assert row["scores"] == pytest.approx(judge([row["prompt"]] * 3, row["completions"]).tolist())
        usable = [i for i, c in enumerate(row["completions"]) if c]
        top = max(usable, key=lambda i: (row["scores"][i], -i))
        assert row["chosen"] == row["completions"][top] and row["model_chosen"] == row["models"][top]
        assert row["score_chosen"] == pytest.approx(max(row["scores"][i] for i in usable))
        assert row["score_rejected"] < row["score_chosen"] and row["rejected"] != row["chosen"]
    report = json.load(open(os.path.join(aif_dir, "aif_report.json")))["report"]
    assert report["pairs"] == len(pairs["train"]) + len(pairs["validation"])
    assert report["pairs"] + sum(report["dropped"].values()) == report["prompts"] == 60


def test_aif_is_reproducible(aif_dir, tmp_path):
    again = str(tmp_path / "again")
    run_aif(["embedded:tiny", "embedded:micro", "embedded:tiny"], again, num_prompts=48, num_val_prompts=12, max_new_tokens=10, progress=False)
    assert load_from_disk(again)["train"].to_list() == load_from_disk(aif_dir)["train"].to_list()


def test_written_pairs_load_through_the_pairwise_datamodule(aif_dir):
    data = PairwiseDataModule(model="embedded:tiny", dataset=aif_dir, split="train", val_split="validation", max_length=48, max_prompt_length=16, batch_size=4)
    data.setup()
    pairs = load_from_disk(aif_dir)
    assert data.reports["train"].total == len(pairs["train"]) and data.reports["validation"].total == len(pairs["validation"])
    assert len(data.train_examples) >= len(pairs["train"]) - data.reports["train"].dropped.total()
    batch = next(iter(data.train_dataloader()))
    assert batch.input_ids.shape[0] == 8  # chosen + rejected of 4 pairs in one forward


def test_user_judge_by_class_path_via_cli(tmp_path):
    from lit_align.aif import main

    out = str(tmp_path / "pairs")
    main(["--models", "[embedded:tiny, embedded:micro]", "--judge", "tests.test_aif.WordCountJudge", "--out", out, "--num_prompts=16", "--num_val_prompts=4", "--max_new_tokens=12", "--progress=false"])
    for row in load_from_disk(out)["train"]:
        assert len(row["chosen"].split()) == max(len(c.split()) for c in row["completions"])
        assert len(row["rejected"].split()) < len(row["chosen"].split())


def test_pool_needs_two_completions_and_prompts_need_a_column(tmp_path):
    with pytest.raises(ValueError, match="K >= 2"):
        build_aif_dataset({"train": ["the film was"]}, ["embedded:tiny"], LexiconSentimentReward(), progress=False)
    rows = tmp_path / "prompts.jsonl"
    rows.write_text('{"question": "the film was"}\n')
    with pytest.raises(DataError, match="question"):
        run_aif(["embedded:tiny", "embedded:micro"], str(tmp_path / "out"), judge=LexiconSentimentReward(), prompts=str(rows), val_split=None, progress=False)


def test_arguments_are_checked_before_any_model_loads(tmp_path, monkeypatch):
    from lit_align.data import aif
    from lit_align.errors import ConfigError

    monkeypatch.setattr(aif, "load_causal_lm", lambda *a, **k: pytest.fail("a pool model was loaded before the arguments were checked"))
    out = str(tmp_path / "out")
    for kwargs, message in [
        ({"samples_per_model": 0}, r"run_aif: samples_per_model must be an integer in \[1, inf\), got 0"),
        ({"temperature": 0.0}, r"run_aif: temperature must be in \(0, inf\), got 0.0"),
        ({"max_new_tokens": 0}, r"run_aif: max_new_tokens must be an integer in \[1, inf\), got 0"),
        ({"val_fraction": 1.0}, r"run_aif: val_fraction must be in \(0, 1\), got 1.0"),
        ({"chat_template": "allways"}, r"run_aif: chat_template must be one of"),
        ({"dtype": "float64x"}, r"run_aif: dtype must name a torch floating-point dtype"),
    ]:
        with pytest.raises(ConfigError, match=message):
            run_aif(["embedded:tiny", "embedded:micro"], out, progress=False, **kwargs)
    with pytest.raises(ConfigError, match=r"K >= 2 completions per prompt; the pool gives 1 \(1 model\(s\) x samples_per_model=1\)"):
        run_aif(["embedded:tiny"], out, num_prompts=2, num_val_prompts=2, progress=False)
    # Foreign prompts and no judge: the default lexicon judge would pick pairs at random.
    rows = tmp_path / "prompts.jsonl"
    rows.write_text('{"prompt": "Summarise the article."}\n')
    with pytest.raises(ConfigError, match=r"no judge given, and the prompts \(.*prompts\.jsonl\) are not the embedded task.*--judge lit_align\.rewards\.HFClassifierReward"):
        run_aif(["embedded:tiny", "embedded:micro"], out, prompts=str(rows), val_split=None, progress=False)


def make_tiny_reward_model(path) -> str:
    """A 1-layer Llama sequence classifier with the embedded tokenizer (and its chat template)."""
    from transformers import LlamaConfig, LlamaForSequenceClassification

    from lit_align.embedded.tokenizer import build_tokenizer

    tokenizer = build_tokenizer()
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, num_labels=1, pad_token_id=tokenizer.pad_token_id)
    LlamaForSequenceClassification(config).eval().save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


def test_reward_model_judge_scores_with_a_sequence_classifier(tmp_path):
    from transformers import AutoModelForSequenceClassification

    from lit_align.embedded.tokenizer import build_tokenizer

    judge = HFClassifierReward(make_tiny_reward_model(tmp_path), template="chat", batch_size=2, device="cpu")
    prompts, completions = ["the film was", "the plot is", "sadly , the cast felt"], ["great .", "bad and dull .", "lovely ."]
    scores = judge(prompts, completions)
    assert scores.shape == (3,) and scores.dtype == torch.float32
    # Batched with padding equals scoring one sequence alone, rendered with the judge's chat template.
    tokenizer, model = build_tokenizer(), AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    text = tokenizer.apply_chat_template([{"role": "user", "content": prompts[1]}, {"role": "assistant", "content": completions[1]}], tokenize=False)
    with torch.no_grad():
        alone = model(**tokenizer(text, add_special_tokens=False, return_tensors="pt")).logits[0, 0]
    assert scores[1].item() == pytest.approx(alone.item(), abs=1e-5)
    assert len(set(scores.tolist())) == 3
