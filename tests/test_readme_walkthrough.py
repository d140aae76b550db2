"""The README's "Your own model and data" commands, run exactly as written (parsed out of README.md,
so they cannot drift) on a tiny GPT-2-style checkpoint: tied head, BOS = EOS, no pad token, no chat
template, a byte-level BPE tokenizer, saved with save_pretrained as a user's own model would be."""

from __future__ import annotations

import json
import os
import re
import subprocess

import torch
from safetensors.torch import load_file
from tokenizers import ByteLevelBPETokenizer
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

from tests.conftest import REPO

WORDS = ("The movie was", "The food was", "The service was", "The hotel was")
GOOD, BAD = "wonderful and warm, a delight", "dull and cold, a waste"


def walkthrough_commands() -> str:
    with open(os.path.join(REPO, "README.md")) as f:
        readme = f.read()
    block = re.search(r"<!-- walkthrough -->\s*```bash\n(.*?)```\s*<!-- /walkthrough -->", readme, re.S)
    assert block, "README.md lost its <!-- walkthrough --> block"
    return block.group(1)


def build_gpt2_style(path: str) -> None:
    corpus = [f"{w} {GOOD}" for w in WORDS] + [f"{w} {BAD}" for w in WORDS]
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(corpus * 10, vocab_size=300, min_frequency=1, special_tokens=["<|endoftext|>"])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer, bos_token="<|endoftext|>", eos_token="<|endoftext|>", unk_token="<|endoftext|>")
    assert tokenizer.pad_token is None and tokenizer.bos_token_id == tokenizer.eos_token_id
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=256, n_embd=32, n_layer=2, n_head=2,
                        bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id, tie_word_embeddings=True)
    torch.manual_seed(0)
    GPT2LMHeadModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)


def test_readme_walkthrough_trains_and_exports_a_policy(tmp_path):
    build_gpt2_style(str(tmp_path / "my_model"))
    with open(tmp_path / "my_pairs.jsonl", "w") as f:
        for i in range(48):
            prompt = WORDS[i % len(WORDS)]
            f.write(json.dumps({"prompt": prompt, "chosen": f" {GOOD}", "rejected": f" {BAD}"}) + "\n")
    os.symlink(os.path.join(REPO, "configs"), tmp_path / "configs")  # "from the lit_align checkout"
    env = {**os.environ, "PYTHONPATH": REPO, "LIT_ALIGN_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(["bash", "-euo", "pipefail", "-c", walkthrough_commands()], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    export = tmp_path / "runs" / "my_dpo" / "version_0" / "hf_model"
    assert (export / "model.safetensors").exists() and (export / "tokenizer.json").exists()
    # The policy trained: its weights moved away from the starting checkpoint.
    start, trained = load_file(tmp_path / "my_model" / "model.safetensors"), load_file(export / "model.safetensors")
    moved = sum(float((trained[k].float() - start[k].float()).abs().sum()) for k in start if k in trained)
    assert moved > 0
    # The generation step printed the prompt followed by the policy's continuation.
    assert "The movie was" in result.stdout
    assert "lit_align: final val/loss" in result.stdout
