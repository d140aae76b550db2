"""The tiny randomly initialised Llama-family model of the embedded default."""

from __future__ import annotations

import torch
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerBase

# About 1.9M parameters: small enough that SFT + DPO on the synthetic task take minutes on 2 CPU
# cores, large enough to represent prompt-conditional sentiment.
SIZES = {
    "tiny": dict(hidden_size=192, intermediate_size=512, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=4),
    "micro": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2),
}


def model_config(tokenizer: PreTrainedTokenizerBase, size: str = "tiny") -> LlamaConfig:
    """The config of the embedded model of ``size`` (readable without building any weights)."""
    if size not in SIZES:
        raise ValueError(f"unknown embedded model size {size!r}; choose one of {sorted(SIZES)}")
    return LlamaConfig(
        vocab_size=len(tokenizer),
        max_position_embeddings=128,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
        **SIZES[size],
    )


def build_model(tokenizer: PreTrainedTokenizerBase, size: str = "tiny", seed: int = 0) -> LlamaForCausalLM:
    """A randomly initialised ``LlamaForCausalLM`` whose vocabulary matches ``tokenizer``."""
    config = model_config(tokenizer, size)
    # Seeded locally so building the model never disturbs the global RNG stream of a run.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return LlamaForCausalLM(config)
