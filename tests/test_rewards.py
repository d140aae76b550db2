"""Reward plug-ins: the embedded lexicon and a Hugging Face sequence classifier loaded by path."""

from __future__ import annotations

import os

import pytest
import torch
from transformers import LlamaConfig, LlamaForSequenceClassification

from lit_align.embedded.tokenizer import build_tokenizer
from lit_align.errors import ConfigError
from lit_align.rewards import HFClassifierReward, LexiconSentimentReward
from tests.conftest import cli_in_process


def test_lexicon_reward_counts_sentiment_words_per_word():
    reward = LexiconSentimentReward()
    scores = reward(["p"] * 4, ["great great great .", "awful .", "great but dull and slow .", ""]).tolist()
    # (#positive - #negative) / max(#words, 3): punctuation is not a word.
    assert scores == pytest.approx([1.0, -1 / 3, -1 / 5, 0.0])


def save_tiny_classifier(path, num_labels: int, id2label=None) -> LlamaForSequenceClassification:
    tokenizer = build_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=2, num_labels=num_labels, pad_token_id=tokenizer.pad_token_id, id2label=id2label,
    )
    torch.manual_seed(0)
    model = LlamaForSequenceClassification(config).eval()
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return model


def test_hf_reward_model_scores_with_its_logit_on_text_ending_in_eos(tmp_path):
    model = save_tiny_classifier(tmp_path, num_labels=1)
    reward = HFClassifierReward(str(tmp_path), batch_size=2, device="cpu")
    prompts = ["the film was", "sadly , the plot felt", "the cast was"]
    completions = ["great and moving .", "dull .", "good but rather slow and messy ."]
    scores = reward(prompts, completions)
    assert scores.dtype == torch.float32 and scores.shape == (3,)
    # Batched with padding == each text alone, ending in one EOS, through the original model.
    tokenizer = build_tokenizer()
    for i, (p, c) in enumerate(zip(prompts, completions)):
        ids = tokenizer(f"{p} {c}")["input_ids"]
        assert ids[-1] != tokenizer.eos_token_id
        with torch.no_grad():
            expected = model(input_ids=torch.tensor([ids + [tokenizer.eos_token_id]])).logits[0, 0]
            without = model(input_ids=torch.tensor([ids])).logits[0, 0]
        assert scores[i].item() == pytest.approx(expected.item(), abs=1e-5)
        assert abs(expected.item() - without.item()) > 1e-4  # the EOS position scores differently
    assert len(set(scores.tolist())) == 3  # the score depends on the text
    # append_eos=False scores the plain text; a text already ending in EOS gets no second one.
    plain = HFClassifierReward(str(tmp_path), append_eos=False, device="cpu")(prompts, completions)
    with torch.no_grad():
        expected_plain = [model(**tokenizer(f"{p} {c}", return_tensors="pt")).logits[0, 0].item() for p, c in zip(prompts, completions)]
    assert plain.tolist() == pytest.approx(expected_plain, abs=1e-5)
    explicit = HFClassifierReward(str(tmp_path), template="{prompt} {completion} </s>", device="cpu")(prompts, completions)
    assert torch.allclose(explicit, scores, atol=1e-6)


def test_hf_reward_append_eos_keeps_the_end_when_truncating(tmp_path):
    model = save_tiny_classifier(tmp_path, num_labels=1)
    tokenizer = build_tokenizer()
    ids = tokenizer("the film was great and moving .")["input_ids"]
    score = HFClassifierReward(str(tmp_path), max_length=4, device="cpu")(["the film was"], ["great and moving ."])
    # Cut from the left as the training encoder cuts prompts: the BOS stays, then the last tokens and the EOS.
    assert ids[0] == tokenizer.bos_token_id
    with torch.no_grad():
        expected = model(input_ids=torch.tensor([[ids[0]] + (ids + [tokenizer.eos_token_id])[-3:]])).logits[0, 0]
    assert score.item() == pytest.approx(expected.item(), abs=1e-5)


def test_hf_classifier_label_by_name_and_log_odds(tmp_path):
    model = save_tiny_classifier(tmp_path, num_labels=2, id2label={0: "NEGATIVE", 1: "POSITIVE"})
    texts = (["the film was"], ["great ."])
    logits = model(**build_tokenizer()("the film was great .", return_tensors="pt")).logits[0].detach()
    # Several labels: a classifier of plain text, so no EOS is appended unless asked for.
    log_odds = HFClassifierReward(str(tmp_path), label="POSITIVE", score="log_odds", device="cpu")(*texts)
    assert log_odds.item() == pytest.approx((logits[1] - logits[0]).item(), abs=1e-5)
    probability = HFClassifierReward(str(tmp_path), label=1, score="probability", device="cpu")(*texts)
    assert probability.item() == pytest.approx(torch.softmax(logits, -1)[1].item(), abs=1e-6)
    with pytest.raises(ValueError, match="no label 'HAPPY'"):
        HFClassifierReward(str(tmp_path), label="HAPPY", device="cpu")


def test_hf_reward_missing_model_is_a_clear_error(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(ConfigError, match=f"model='{missing}'.*there is no folder {missing}"):
        HFClassifierReward(str(missing))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="exists but holds no loadable classifier"):
        HFClassifierReward(str(tmp_path / "empty"))


def test_hf_reward_missing_model_through_the_cli_is_one_paragraph(tmp_path, monkeypatch, capsys):
    """The CLI (``cli_main``, in-process): a reward model folder that was never exported is a one-paragraph error, no traceback."""
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    missing = tmp_path / "no_reward_model"
    monkeypatch.chdir(tmp_path)
    code, _, err = cli_in_process(capsys, "fit", "--config", os.path.join(repo, "configs/online_dpo.yaml"), "--model.init_args.model=embedded:micro",
                                  "--model.init_args.reward=lit_align.rewards.HFClassifierReward", f"--model.init_args.reward.model={missing}", "--trainer.max_steps=1")
    assert code == 1
    assert f"there is no folder {missing}" in err and "Traceback" not in err, err[-3000:]
