"""lit_align.online.generation: the shared-prefill sampler draws exactly what model.generate draws for
the same seed (same rows, same RNG order), across chunk boundaries that split a prompt's samples."""

from __future__ import annotations

import pytest

from lit_align.modeling import load_causal_lm, load_tokenizer
from lit_align.online.generation import sample_completions


@pytest.mark.parametrize("num_samples,batch_size,temperature,seed", [(3, 64, 1.0, 0), (3, 4, 1.0, 1), (2, 5, 0.7, 2)])
def test_shared_prefill_draws_what_generate_draws(num_samples, batch_size, temperature, seed):
    tokenizer = load_tokenizer("embedded:micro")
    model = load_causal_lm("embedded:micro", tokenizer)
    prompts = [tokenizer(text)["input_ids"] for text in ("the film was", "i think the food", "a")]
    settings = (num_samples, 10, temperature, batch_size)
    reference = sample_completions(model, tokenizer, prompts, *settings, seed=seed)
    shared = sample_completions(model, tokenizer, prompts, *settings, seed=seed, engine="shared_prefill")
    assert shared == reference
    assert shared != sample_completions(model, tokenizer, prompts, *settings, seed=seed + 10, engine="shared_prefill")
    assert all(len(c) <= 10 for per_prompt in shared for c in per_prompt) and len(shared) == 3 and all(len(p) == num_samples for p in shared)


def test_unknown_engine_is_refused():
    tokenizer = load_tokenizer("embedded:micro")
    with pytest.raises(ValueError, match="unknown sampling engine 'vllm'"):
        sample_completions(None, tokenizer, [[1]], engine="vllm")
