"""The fixed workload of the benchmark (and of the DDP/reference-mode tests): preference pairs of
the embedded review task written to a JSONL file, read by ``PairwiseDataModule`` like user data.

Chosen completions come from a mostly-positive generator and rejected ones from a mostly-negative
one; lengths vary from 2 to ~15 words, so batches really contain padding.

``write_long_prompt_pairs`` is the long-prompt workload (issue 17): each prompt carries an earlier
exchange of several reviews before the one to continue, as a multi-turn chat does, so prompts are
~5-10x longer than completions (at least 3x on average, checked in tests).
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys

from lit_align.embedded.task import make_completion, make_prompt


def write_pairs(path: str, n: int, seed: int = 0) -> str:
    """Write ``n`` rows ``{prompt, chosen, rejected}`` to ``path`` (JSONL) and return ``path``."""
    rng = random.Random(seed)
    with open(path, "w") as f:
        for _ in range(n):
            prompt = make_prompt(rng)
            chosen, rejected = make_completion(prompt, rng, 0.9), make_completion(prompt, rng, 0.1)
            while rejected == chosen:
                rejected = make_completion(prompt, rng, 0.1)
            f.write(json.dumps({"prompt": prompt, "chosen": chosen, "rejected": rejected}) + "\n")
    return path


def long_prompt(rng: random.Random, turns: tuple[int, int] = (4, 8)) -> str:
    """Several finished reviews (prompt + completion each), then the opening to continue."""
    history = []
    for _ in range(rng.randint(*turns)):
        opening = make_prompt(rng)
        history.append(f"{opening} {make_completion(opening, rng)}")
    return " ".join(history + [make_prompt(rng)])


def write_long_prompt_pairs(path: str, n: int, seed: int = 0) -> str:
    """Like ``write_pairs`` with ``long_prompt`` prompts: the prompt dominates every pair."""
    rng = random.Random(seed)
    with open(path, "w") as f:
        for _ in range(n):
            prompt = long_prompt(rng)
            # Completions depend on the last opening only (its tilt), as in the short workload.
            last = prompt.rsplit(" . ", 1)[-1]
            chosen, rejected = make_completion(last, rng, 0.9), make_completion(last, rng, 0.1)
            while rejected == chosen:
                rejected = make_completion(last, rng, 0.1)
            f.write(json.dumps({"prompt": prompt, "chosen": chosen, "rejected": rejected}) + "\n")
    return path


# Workload name -> (writer, max_length, max_prompt_length) of the benchmark.
WORKLOADS = {"short": (write_pairs, 64, 16), "long-prompt": (write_long_prompt_pairs, 128, 112)}


# A tiny Llama with a real vocabulary size (Llama 2's 32000). The embedded model's 93-word vocabulary
# makes the LM head ~1% of the FLOPs; in every real LLM (32k-150k tokens) the head and its
# [batch, length, vocab] logits are a large share of time and most of the activation memory, which
# is what the DPO implementations differ in. Token ids come from the embedded tokenizer (< 93).
TINY_LLAMA_32K = dict(vocab_size=32000, hidden_size=256, intermediate_size=688, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=256, tie_word_embeddings=False)


# The memory workload (issue 17): ~88M parameters (hidden 768, 12 layers, as in the TRL
# comparison), where weights and optimiser state, not imported libraries, dominate peak memory.
LLAMA_88M = dict(vocab_size=2048, hidden_size=768, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=12, num_key_value_heads=12, max_position_embeddings=256, tie_word_embeddings=False)
# Model presets the benchmark scripts build on the fly (``--model <name>``).
MODELS = {"tiny-llama-32k": TINY_LLAMA_32K, "llama-88m": LLAMA_88M}


def write_model(path: str, seed: int = 0, **config: int) -> str:
    """Save a random-init ``LlamaForCausalLM`` (``TINY_LLAMA_32K`` unless overridden) with the embedded tokenizer to ``path``."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from lit_align.modeling import load_tokenizer

    tokenizer = load_tokenizer("embedded:tiny")
    settings = {**TINY_LLAMA_32K, **config}
    torch.manual_seed(seed)
    model = LlamaForCausalLM(LlamaConfig(**settings, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id))
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def run_child(command: list[str], tag: str, env: dict[str, str], label: str) -> dict | None:
    """Run one measurement in a fresh process (peak RSS is per process) and return the JSON it prints
    after ``tag``; on failure print the tail of its stderr under ``label`` and return None."""
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.run(command, env=env, capture_output=True, text=True, cwd=repo)
    line = next((line for line in proc.stdout.splitlines() if line.startswith(tag + " ")), None)
    if line is None:
        print(f"{label}: FAILED\n{proc.stderr[-3000:]}")
        return None
    return json.loads(line[len(tag) + 1 :])


def trl_importable(env: dict[str, str]) -> bool:
    return subprocess.run([sys.executable, "-c", "import trl"], env=env, capture_output=True).returncode == 0
