"""Datasets of the embedded default, generated deterministically and cached under ``cache_root()``
(``$LIT_ALIGN_CACHE``, default ``~/.cache/lit_align``: the same cache whatever the current directory).

Dataset names (used wherever a DataModule takes ``dataset``):

* ``embedded:demonstrations`` — prompt/completion rows from the task's generator (mixed sentiment);
* ``embedded:teacher`` — demonstrations from a strongly positive generator (a "teacher", for Zephyr dSFT);
* ``embedded:prompts`` — prompts only (online sampling, evaluation);
* ``embedded:pairs`` — prompt/chosen/rejected: two samples per prompt from a model (the
  DataModule's ``model``, normally the SFT policy), labelled by the ground-truth reward.
"""

from __future__ import annotations

import hashlib
import json
import os
import random

import torch
from datasets import Dataset, load_from_disk
from lightning.pytorch.utilities import rank_zero_info

# cache_root/model_fingerprint live in lit_align.cache (reference_cache needs them without importing
# the data layer); re-exported here for code that imported them from this module.
from lit_align.cache import cache_root, model_fingerprint  # noqa: F401
from lit_align.data.feedback import select_pair
from lit_align.embedded.task import make_demonstrations, make_prompts
from lit_align.online.generation import sample_completions
from lit_align.modeling import load_causal_lm, load_tokenizer
from lit_align.rewards.sentiment import LexiconSentimentReward
from lit_align.online.scoring import decode_completion

SPLIT_SEED_OFFSET = {"train": 0, "validation": 1_000_003, "test": 2_000_003}
TEACHER_POSITIVITY = 0.9


def _cached(kind: str, params: dict, build) -> Dataset:
    key = hashlib.sha1(json.dumps(params, sort_keys=True).encode()).hexdigest()[:16]
    path = os.path.join(cache_root(), f"{kind}-{key}")
    if os.path.exists(os.path.join(path, "state.json")):
        return load_from_disk(path)
    rows = build()
    rows.save_to_disk(path)
    with open(os.path.join(path, "lit_align_params.json"), "w") as f:
        json.dump(params, f, indent=1)
    return load_from_disk(path)


def build_pairs(model: str, prompts: list[str], seed: int, max_new_tokens: int = 24, num_samples: int = 2) -> tuple[Dataset, int]:
    """Sample ``num_samples`` completions per prompt from ``model`` and keep (best, random lower) pairs.

    Returns the pairs and the number of prompts dropped because every sample scored the same.
    """
    tokenizer = load_tokenizer(model)
    policy = load_causal_lm(model, tokenizer)
    prompt_ids = [tokenizer(p, add_special_tokens=True)["input_ids"] for p in prompts]
    samples = sample_completions(policy, tokenizer, prompt_ids, num_samples, max_new_tokens, batch_size=256, seed=seed, progress=True)
    reward = LexiconSentimentReward()
    rng = random.Random(seed)
    rows, ties = [], 0
    for prompt, completions in zip(prompts, samples):
        texts = [decode_completion(tokenizer, c) for c in completions]
        scores = reward([prompt] * len(texts), texts).tolist()
        pair = select_pair(scores, rng)
        if pair is None or not texts[pair[1]]:
            ties += 1
            continue
        rows.append({"prompt": prompt, "chosen": texts[pair[0]], "rejected": texts[pair[1]], "score_chosen": scores[pair[0]], "score_rejected": scores[pair[1]]})
    return Dataset.from_list(rows), ties


def embedded_rows(name: str, split: str, num_examples: int, seed: int = 0, model: str | None = None) -> Dataset:
    """Rows of an ``embedded:*`` dataset (see module docstring), built once and cached."""
    if split not in SPLIT_SEED_OFFSET:
        raise ValueError(f"embedded datasets have splits {sorted(SPLIT_SEED_OFFSET)}, not {split!r}")
    split_seed = seed + SPLIT_SEED_OFFSET[split]
    kind = name[len("embedded:") :]
    if kind in ("demonstrations", "teacher"):
        positivity = TEACHER_POSITIVITY if kind == "teacher" else None
        return Dataset.from_list(make_demonstrations(num_examples, split_seed, positivity))
    if kind == "prompts":
        return Dataset.from_list([{"prompt": p} for p in make_prompts(num_examples, split_seed)])
    if kind == "pairs":
        if model is None:
            raise ValueError("embedded:pairs samples from a model; set the DataModule's `model`")
        params = {"model": model_fingerprint(model), "n": num_examples, "seed": split_seed, "split": split}

        def build() -> Dataset:
            rank_zero_info(f"lit_align: sampling {num_examples} embedded preference pairs ({split}) from {model} ...")
            with torch.inference_mode(False):
                rows, ties = build_pairs(model, make_prompts(num_examples, split_seed), split_seed)
            rank_zero_info(f"lit_align: kept {len(rows)} pairs; dropped {ties} prompts whose two samples tied in reward")
            return rows

        return _cached("pairs", params, build)
    raise ValueError(f"unknown embedded dataset {name!r}; choose embedded:demonstrations, embedded:teacher, embedded:prompts or embedded:pairs")
