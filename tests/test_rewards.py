"""Reward plug-ins: the embedded lexicon and a Hugging Face sequence classifier loaded by path."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForSequenceClassification

from lit_align.embedded.tokenizer import build_tokenizer
from lit_align.rewards import HFClassifierReward, LexiconSentimentReward


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


def test_hf_reward_model_scores_with_its_logit(tmp_path):
    model = save_tiny_classifier(tmp_path, num_labels=1)
    reward = HFClassifierReward(str(tmp_path), batch_size=2, device="cpu")
    prompts = ["the film was", "sadly , the plot felt", "the cast was"]
    completions = ["great and moving .", "dull .", "good but rather slow and messy ."]
    scores = reward(prompts, completions)
    assert scores.dtype == torch.float32 and scores.shape == (3,)
    # Batched with padding == each text alone through the original model.
    tokenizer = build_tokenizer()
    for i, (p, c) in enumerate(zip(prompts, completions)):
        with torch.no_grad():
            expected = model(**tokenizer(f"{p} {c}", return_tensors="pt")).logits[0, 0]
        assert scores[i].item() == pytest.approx(expected.item(), abs=1e-5)
    assert len(set(scores.tolist())) == 3  # the score depends on the text


def test_hf_classifier_label_by_name_and_log_odds(tmp_path):
    model = save_tiny_classifier(tmp_path, num_labels=2, id2label={0: "NEGATIVE", 1: "POSITIVE"})
    texts = (["the film was"], ["great ."])
    logits = model(**build_tokenizer()("the film was great .", return_tensors="pt")).logits[0].detach()
    log_odds = HFClassifierReward(str(tmp_path), label="POSITIVE", score="log_odds", device="cpu")(*texts)
    assert log_odds.item() == pytest.approx((logits[1] - logits[0]).item(), abs=1e-5)
    probability = HFClassifierReward(str(tmp_path), label=1, score="probability", device="cpu")(*texts)
    assert probability.item() == pytest.approx(torch.softmax(logits, -1)[1].item(), abs=1e-6)
    with pytest.raises(ValueError, match="no label 'HAPPY'"):
        HFClassifierReward(str(tmp_path), label="HAPPY", device="cpu")


def test_hf_reward_missing_model_is_a_clear_error(tmp_path):
    with pytest.raises(OSError, match="sequence-classification reward model"):
        HFClassifierReward(str(tmp_path / "nope"))
