"""A learned reward scores the text on every tokenizer (issue 23, item 2).

``HFClassifierReward`` must read [BOS] + text + one EOS, the layout ``RewardModel`` trains on,
whatever the tokenizer's BOS/EOS conventions: GPT-2 (nothing added, BOS = EOS), OPT (BOS = EOS
``</s>`` prepended: cutting "after the last EOS" once scored every text as ``</s>`` alone, so every
score was the same) and Llama-style (adds BOS and EOS itself, pads left, no pad token).

Each family gets a tiny sequence classifier trained for a few steps, on rows encoded as
``RewardModel`` encodes them, to score a completion +1 / 0 / -1 by its sentiment word; the reward
must then rank three known texts in that order, with scores apart, and equal the classifier's
score of exactly the expected ids.
"""

from __future__ import annotations

import pytest
import torch
from tokenizers import processors
from transformers import (
    GPT2Config, GPT2ForSequenceClassification, LlamaConfig, LlamaForSequenceClassification, OPTConfig, OPTForSequenceClassification,
    PreTrainedTokenizerFast,
)

from lit_align.data.collate import sequences_with_mask
from lit_align.data.tokenize import PromptCompletionEncoder
from lit_align.reward_head import export_reward_model, sequence_rewards
from lit_align.rewards import HFClassifierReward
from tests.families import _byte_level_bpe, build_tokenizer

PROMPTS = ["the film was", "honestly , the plot felt", "the cast seemed", "sadly , the music sounded", "the ending looked", "this sequel is"]
WORDS = {1.0: ["great", "brilliant", "moving"], 0.0: ["long", "loud", "plain"], -1.0: ["awful", "dull", "boring"]}
# Three texts and the order they must be ranked in.
KNOWN = [("the acting felt", "great ."), ("the acting felt", "long ."), ("the acting felt", "awful .")]


def _with_post_processor(core, single: str, specials: list[str]):
    core.post_processor = processors.TemplateProcessing(single=single, special_tokens=[(t, core.token_to_id(t)) for t in specials])
    return core


def opt_tokenizer() -> PreTrainedTokenizerFast:
    """OPT style: BOS = EOS = ``</s>``, prepended to every text; its own pad token."""
    core = _with_post_processor(_byte_level_bpe(["<s>", "<pad>", "</s>", "<unk>"]), "</s> $A", ["</s>"])
    return PreTrainedTokenizerFast(tokenizer_object=core, bos_token="</s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>", clean_up_tokenization_spaces=False)


def llama_tokenizer() -> PreTrainedTokenizerFast:
    """Llama style with ``add_eos_token``: ``<s> text </s>``, padding on the left, no pad token."""
    core = _with_post_processor(_byte_level_bpe(["<unk>", "<s>", "</s>"]), "<s> $A </s>", ["<s>", "</s>"])
    return PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<s>", eos_token="</s>", unk_token="<unk>", padding_side="left", clean_up_tokenization_spaces=False)


def classifier(family: str, tokenizer) -> torch.nn.Module:
    ids = dict(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, num_labels=1)
    size = dict(vocab_size=len(tokenizer))
    if family == "gpt2":
        return GPT2ForSequenceClassification(GPT2Config(**size, n_positions=64, n_embd=32, n_layer=1, n_head=2, **ids))
    if family == "opt":
        return OPTForSequenceClassification(OPTConfig(**size, hidden_size=32, ffn_dim=64, num_hidden_layers=1, num_attention_heads=2, max_position_embeddings=64, word_embed_proj_dim=32, **ids))
    return LlamaForSequenceClassification(LlamaConfig(**size, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2, **ids))


TOKENIZERS = {"gpt2": lambda: build_tokenizer("gpt2"), "opt": opt_tokenizer, "llama": llama_tokenizer}


def train_reward_model(family: str, directory: str):
    """A few steps of regression on rows encoded as RewardModel encodes them ([BOS] prompt completion EOS,
    right-padded, scored on the last attended token), then exported as RewardModel exports."""
    tokenizer = TOKENIZERS[family]()
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token  # what load_tokenizer does for a tokenizer without one
    encoder = PromptCompletionEncoder(tokenizer, max_length=64, max_prompt_length=32)
    # A leading space: the byte-level BPEs then split "prompt" + " completion" into the same tokens as the
    # joined text "prompt completion" the reward renders (the training encoder tokenizes the two apart).
    rows = [(p, f" {w} .", target) for p in PROMPTS + ["the acting felt"] for target, words in WORDS.items() for w in words]
    prompt_ids = [encoder.encode_prompt(p) for p, _, _ in rows]
    input_ids, attention_mask, _ = sequences_with_mask(prompt_ids, [encoder.encode_completion(p, c) for p, c, _ in rows], tokenizer.pad_token_id)
    targets = torch.tensor([t for _, _, t in rows])
    torch.manual_seed(0)
    model = classifier(family, tokenizer)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(100):
        loss = torch.nn.functional.mse_loss(sequence_rewards(model, input_ids, attention_mask), targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.05, f"{family}: the tiny classifier did not fit ({loss.item():.3f})"
    export_reward_model(model.eval(), tokenizer, directory)
    return model, tokenizer, encoder


@pytest.mark.parametrize("family", ["gpt2", "opt", "llama"])
def test_reward_ranks_known_texts_and_scores_exactly_text_plus_one_eos(family, tmp_path):
    model, tokenizer, encoder = train_reward_model(family, str(tmp_path))
    reward = HFClassifierReward(str(tmp_path), batch_size=2, device="cpu")  # batches of 2: padding inside a batch
    prompts, completions = zip(*KNOWN)
    scores = reward(list(prompts), list(completions))
    assert scores[0] > scores[1] > scores[2], f"{family}: {scores.tolist()}"
    assert (scores[0] - scores[1]).item() > 0.3 and (scores[1] - scores[2]).item() > 0.3, f"{family}: {scores.tolist()}"
    for (prompt, completion), score in zip(KNOWN, scores):
        ids = tokenizer(f"{prompt} {completion}", add_special_tokens=False)["input_ids"]
        expected = ([tokenizer.bos_token_id] if encoder.adds_bos else []) + ids + [tokenizer.eos_token_id]
        # The layout of training: the training encoder's BOS, the text, exactly one EOS at the end.
        assert expected.count(tokenizer.eos_token_id) == 1 + int(tokenizer.bos_token_id == tokenizer.eos_token_id and encoder.adds_bos)
        with torch.no_grad():
            alone = sequence_rewards(model, torch.tensor([expected]), torch.ones(1, len(expected), dtype=torch.long))
        assert score.item() == pytest.approx(alone.item(), abs=1e-4)
