"""Tiny random-init checkpoints of several model families, built locally and saved with ``save_pretrained``.

Each family reproduces the quirks a user's own checkpoint brings (issue 14, item 6):

* ``gpt2``: GPT-2 style — tied head, BOS = EOS (``<|endoftext|>``), no pad token, no chat template.
* ``qwen2``: Qwen2 style — ChatML template, EOS (``<|im_end|>``) != pad (``<|endoftext|>``), no BOS,
  untied head.
* ``gemma2``: Gemma-2 style — soft-capped final logits (the compact head must fall back to the
  model's own logits), sliding-window attention narrower than the sequences, a tokenizer that adds
  BOS itself and a template that writes BOS too (the double-BOS trap), ``assistant`` rendered as
  ``model``.

Tokenizers are built locally, so nothing is downloaded: byte-level BPE trained in milliseconds on
the embedded task's words for the GPT-2 and Qwen2 styles (as their real tokenizers are; transformers
5 also rebuilds any tokenizer saved next to a ``qwen2`` config as a byte-level BPE from its vocab
and merges, so a word-level one would not survive the reload), and word-level over the same words
with a BOS-adding post-processor (as ``lit_align.embedded.tokenizer`` builds its own) for Gemma-2.
"""

from __future__ import annotations

import json
import os
import random

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import Gemma2Config, Gemma2ForCausalLM, GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

from lit_align.embedded.task import NEGATIVE, OPENERS, POSITIVE, SUBJECTS, VERBS, vocabulary

FAMILIES = ("gpt2", "qwen2", "gemma2")
# Words the templates write (role names), so rendered chat text has no <unk> either.
TEMPLATE_WORDS = ["user", "assistant", "system", "model", ":"]

CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
GEMMA = (
    "{{ bos_token }}{% for message in messages %}{% set role = 'model' if message['role'] == 'assistant' else message['role'] %}"
    "{{ '<start_of_turn>' + role + ' ' + message['content'] + '<end_of_turn>' + ' ' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model ' }}{% endif %}"
)
# What a GPT-2 user passes as data.chat_template (their tokenizer has none).
PLAIN_CHAT_TEMPLATE = "{% for m in messages %}{{ m['role'] }} : {{ m['content'] }} {% endfor %}{% if add_generation_prompt %}assistant : {% endif %}"

SPECIALS = {
    "gpt2": dict(tokens=["<|endoftext|>"], bos="<|endoftext|>", eos="<|endoftext|>", pad=None, unk=None, template=None, adds_bos=False),
    "qwen2": dict(tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"], bos=None, eos="<|im_end|>", pad="<|endoftext|>", unk=None, template=CHATML, adds_bos=False),
    "gemma2": dict(tokens=["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>"], bos="<bos>", eos="<eos>", pad="<pad>", unk="<unk>", template=GEMMA, adds_bos=True),
}


def _byte_level_bpe(special_tokens: list[str]) -> Tokenizer:
    """A byte-level BPE (GPT-2/Qwen2 style) trained on the task's words: every string encodes, no <unk>."""
    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    words = TEMPLATE_WORDS + vocabulary()
    corpus = [" ".join(words[i:] + words[:i]) for i in range(len(words))] + ["\n".join(words)]
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=special_tokens, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    core.train_from_iterator(corpus, trainer)
    return core


def _word_level(special_tokens: list[str]) -> Tokenizer:
    vocab = {token: i for i, token in enumerate(special_tokens + TEMPLATE_WORDS + vocabulary())}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return core


def build_tokenizer(family: str) -> PreTrainedTokenizerFast:
    spec = SPECIALS[family]
    core = _word_level(spec["tokens"]) if spec["unk"] else _byte_level_bpe(spec["tokens"])
    if spec["adds_bos"]:
        bos = spec["bos"]
        core.post_processor = processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A $B", special_tokens=[(bos, core.token_to_id(bos))])
    named = {"bos_token": spec["bos"], "eos_token": spec["eos"], "pad_token": spec["pad"], "unk_token": spec["unk"]}
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        **{k: v for k, v in named.items() if v is not None},
        additional_special_tokens=[t for t in spec["tokens"] if t not in named.values()],
        clean_up_tokenization_spaces=False,
    )
    if spec["template"]:
        tokenizer.chat_template = spec["template"]
    return tokenizer


def build_model(family: str, tokenizer: PreTrainedTokenizerFast) -> torch.nn.Module:
    ids = dict(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    vocab = len(tokenizer)
    if family == "gpt2":
        config = GPT2Config(vocab_size=vocab, n_positions=128, n_embd=32, n_layer=2, n_head=2, **ids)
        return GPT2LMHeadModel(config)
    if family == "qwen2":
        config = Qwen2Config(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128, tie_word_embeddings=False, **ids)
        return Qwen2ForCausalLM(config)
    config = Gemma2Config(
        vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1, head_dim=16,
        max_position_embeddings=128, sliding_window=8, final_logit_softcapping=30.0, attn_logit_softcapping=50.0, **ids,
    )
    return Gemma2ForCausalLM(config)


def save_family(family: str, directory: str) -> str:
    """Build ``family`` with random weights (seeded) and ``save_pretrained`` model + tokenizer into ``directory``."""
    tokenizer = build_tokenizer(family)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = build_model(family, tokenizer)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def example_rows(n: int, seed: int = 0) -> list[tuple[str, str, str]]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        # Openers and phrase counts vary, so batches hold rows of different lengths (padding inside a batch).
        prompt = " ".join(w for w in (rng.choice(list(OPENERS)), rng.choice(SUBJECTS), rng.choice(VERBS)) if w)
        chosen, rejected = (" , ".join(rng.sample(words, rng.randint(1, 3))) + " ." for words in (POSITIVE, NEGATIVE))
        rows.append((prompt, chosen, rejected))
    return rows


def _turns(prompt: str, completion: str | None = None) -> list[dict[str, str]]:
    turns = [{"role": "user", "content": prompt}]
    return turns + ([{"role": "assistant", "content": completion}] if completion is not None else [])


def write_data(directory: str, n: int = 10) -> dict[tuple[str, str], str]:
    """jsonl files keyed by (format, kind): format pairwise/unpaired/sft, kind plain/chat (TRL conventions)."""
    rows = example_rows(n)
    files = {
        ("pairwise", "plain"): [{"prompt": p, "chosen": c, "rejected": r} for p, c, r in rows],
        # TRL conversational pairs: the whole conversation on each side, no prompt column.
        ("pairwise", "chat"): [{"chosen": _turns(p, c), "rejected": _turns(p, r)} for p, c, r in rows],
        ("unpaired", "plain"): [{"prompt": p, "completion": y, "label": label} for p, c, r in rows for y, label in ((c, True), (r, False))],
        ("unpaired", "chat"): [{"prompt": _turns(p), "completion": [{"role": "assistant", "content": y}], "label": label} for p, c, r in rows for y, label in ((c, True), (r, False))],
        ("sft", "plain"): [{"prompt": p, "completion": c} for p, c, _ in rows],
        ("sft", "chat"): [{"messages": _turns(p, c)} for p, c, _ in rows],
    }
    paths = {}
    for (fmt, kind), records in files.items():
        path = os.path.join(directory, f"{fmt}_{kind}.jsonl")
        with open(path, "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in records)
        paths[fmt, kind] = path
    return paths


@pytest.fixture(scope="session")
def family_checkpoints(tmp_path_factory) -> dict:
    """{"models": {family: checkpoint dir}, "data": {(format, kind): jsonl path}}, built once per session (~1 s)."""
    root = tmp_path_factory.mktemp("families")
    return {"models": {family: save_family(family, str(root / family)) for family in FAMILIES}, "data": write_data(str(root))}
