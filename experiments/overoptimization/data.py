"""The study's preference data, written as jsonl files inside the output folder.

Two completions per prompt are sampled from the SFT start (as ``embedded:pairs`` does). Three
disjoint prompt sets (seeds): the proxies' training pairs (labelled by the GOLD reward, gold ties
left out), held-out pairs for the proxies' accuracy (gold-labelled too), and the offline-DPO pairs,
labelled later by each PROXY (higher proxy score = chosen; the gold label is kept alongside, so the
proxy's agreement with gold on them is known).
"""

from __future__ import annotations

import json
import os

from lit_align.data.embedded import embedded_rows
from lit_align.data.tokenize import PromptCompletionEncoder
from lit_align.online.generation import sample_completions
from lit_align.modeling import load_causal_lm, load_tokenizer
from lit_align.rewards import LexiconSentimentReward

PROXY_SEED, HELDOUT_SEED, DPO_SEED = 11, 12, 13


def sample_two(sft: str, num_prompts: int, seed: int, max_new_tokens: int = 24) -> list[dict]:
    """Rows {prompt, completions: [a, b], gold: [r_a, r_b]} for ``num_prompts`` training-split prompts of ``seed``."""
    tokenizer = load_tokenizer(sft)
    model = load_causal_lm(sft, tokenizer).eval()
    prompts = [row["prompt"] for row in embedded_rows("embedded:prompts", "train", num_prompts, seed)]
    encoder = PromptCompletionEncoder(tokenizer, 48, 16, "auto")
    samples = sample_completions(model, tokenizer, [encoder.encode_prompt(p) for p in prompts], 2, max_new_tokens, batch_size=256, seed=seed)
    gold = LexiconSentimentReward()
    rows = []
    for prompt, pair in zip(prompts, samples):
        texts = [tokenizer.decode(c, skip_special_tokens=True).strip() for c in pair]
        rows.append({"prompt": prompt, "completions": texts, "gold": gold([prompt] * 2, texts).tolist()})
    return rows


def labelled(rows: list[dict], scores: list[list[float]]) -> tuple[list[dict], int]:
    """Pairs chosen = higher score, rejected = lower; rows whose two scores tie (or with an empty
    completion) are left out and counted, never silently."""
    pairs, dropped = [], 0
    for row, (a, b) in zip(rows, scores):
        if a == b or not all(row["completions"]):
            dropped += 1
            continue
        win = 0 if a > b else 1
        pairs.append({"prompt": row["prompt"], "chosen": row["completions"][win], "rejected": row["completions"][1 - win],
                      "gold_chosen": row["gold"][win], "gold_rejected": row["gold"][1 - win]})
    return pairs, dropped


def write_jsonl(path: str, rows: list[dict]) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path + ".tmp", "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    os.replace(path + ".tmp", path)  # a killed run never leaves half a file that looks finished


def read_jsonl(path: str) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]
