"""Batched sampling from a causal LM with the KV cache: evaluation, pair labelling, AI feedback, BOND."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from lit_align.ops import pad_left


@dataclass(frozen=True)
class SamplingSettings:
    """How online samples are drawn: ``num_samples`` per prompt (BOND's N), at most
    ``max_new_tokens`` tokens each, at ``temperature``, with seeds derived from ``seed``.
    ``BestOfNDataModule`` declares them; the algorithm that samples receives them in its
    ``connect`` step."""

    num_samples: int
    max_new_tokens: int
    temperature: float = 1.0
    seed: int = 0


def cut_at_eos(ids: list[int], eos_token_id: int | None) -> list[int]:
    """Keep tokens up to and including the first EOS (generate pads finished rows after it)."""
    if eos_token_id is not None and eos_token_id in ids:
        return ids[: ids.index(eos_token_id) + 1]
    return ids


@torch.no_grad()
def sample_completions(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompt_ids: list[list[int]],
    num_samples: int = 1,
    max_new_tokens: int = 32,
    temperature: float = 1.0,
    batch_size: int = 64,
    seed: int | None = None,
    progress: bool = False,
) -> list[list[list[int]]]:
    """``num_samples`` completions (token ids, ending at EOS when one was produced) for each prompt.

    Pure ancestral sampling (no top-k/top-p) at ``temperature`` 1 by default, so the samples are
    draws from pi itself and sequence log-ratios over them estimate KL(pi || pi_ref) without bias.
    With ``seed`` the draws are reproducible and the caller's RNG state is left untouched.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    flat = [ids for ids in prompt_ids for _ in range(num_samples)]
    outputs: list[list[int]] = []
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        if seed is not None:
            torch.manual_seed(seed)
        starts = range(0, len(flat), batch_size)
        for start in tqdm(starts, desc="sampling", disable=not progress, leave=False):
            chunk = flat[start : start + batch_size]
            input_ids = pad_left(chunk, pad_id).to(device)
            attention_mask = torch.zeros_like(input_ids)
            for row, ids in enumerate(chunk):
                attention_mask[row, input_ids.shape[1] - len(ids) :] = 1
            generated = model.generate(
                input_ids=input_ids,
                attention_mask=attention_mask,
                do_sample=True,
                temperature=temperature,
                top_k=0,
                top_p=1.0,
                max_new_tokens=max_new_tokens,
                pad_token_id=pad_id,
                eos_token_id=tokenizer.eos_token_id,
                use_cache=True,
            )
            for row in generated[:, input_ids.shape[1] :].tolist():
                outputs.append(cut_at_eos(row, tokenizer.eos_token_id))
    model.train(was_training)
    return [outputs[i * num_samples : (i + 1) * num_samples] for i in range(len(prompt_ids))]
