"""Batched sampling from a causal LM with the KV cache: evaluation, pair labelling, AI feedback, BOND."""

from __future__ import annotations

import inspect
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
    engine: str = "generate",
) -> list[list[list[int]]]:
    """``num_samples`` completions (token ids, ending at EOS when one was produced) for each prompt.

    Pure ancestral sampling (no top-k/top-p) at ``temperature`` 1 by default, so the samples are
    draws from pi itself and sequence log-ratios over them estimate KL(pi || pi_ref) without bias.
    With ``seed`` the draws are reproducible and the caller's RNG state is left untouched.

    ``engine``: ``generate`` (``model.generate``) or ``shared_prefill`` (``decode_shared_prefill``:
    each prompt is encoded once for its k samples and its KV cache expanded; the same random
    draws in the same order, so the same samples as ``generate`` up to float rounding of the
    smaller prefill batch; benchmarks/bench_generation.py compares them).
    """
    if engine not in ENGINES:
        raise ValueError(f"unknown sampling engine {engine!r}; expected one of {', '.join(ENGINES)}")
    return _sample(model, tokenizer, prompt_ids, num_samples, max_new_tokens, temperature, batch_size, seed, progress, engine, with_logps=False)[0]


def logps_while_sampling_are_exact(model: PreTrainedModel) -> bool:
    """Whether the decode loop's log-probs (``sample_completions_with_logps``) can stand in for a full
    forward pass's: fp32 weights, full-precision fp32 matmuls and no autocast, where the two differ by
    fp32 rounding only (within 2e-4 nats a sequence in tests/test_generation.py). In bf16, or with
    TF32 matmuls (``torch.set_float32_matmul_precision("high")``), they differ by far more, which
    would not cancel against a reference's full-forward log-probs in a KL estimate."""
    device = next(model.parameters()).device
    return (
        all(p.dtype == torch.float32 for p in model.parameters())
        and torch.get_float32_matmul_precision() == "highest"
        and not torch.is_autocast_enabled(device.type)
    )


@torch.no_grad()
def sample_completions_with_logps(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompt_ids: list[list[int]],
    num_samples: int = 1,
    max_new_tokens: int = 32,
    batch_size: int = 64,
    seed: int | None = None,
) -> tuple[list[list[list[int]]], torch.Tensor]:
    """``sample_completions`` at temperature 1 with the ``shared_prefill`` engine, plus log pi(y|x) of
    each completion [prompts, num_samples] (summed over its tokens, EOS included) from the logits the
    decode loop sampled from: the evaluation's policy log-probs without a second forward pass.

    Those logits come from incremental decoding with the KV cache, so they equal a full forward's up to
    the rounding of another order of sums: within 2e-4 nats a sequence in fp32 in the tests, far more
    in bf16 or TF32 (where a KL estimate against a full-forward reference would read a few hundredths
    of a nat at KL 0); ``SampledEvaluation`` uses them only where ``logps_while_sampling_are_exact``.
    """
    samples, chunks = _sample(model, tokenizer, prompt_ids, num_samples, max_new_tokens, 1.0, batch_size, seed, False, "shared_prefill", with_logps=True)
    return samples, (torch.cat(chunks) if chunks else torch.zeros(0)).view(len(prompt_ids), num_samples)


def _sample(model, tokenizer, prompt_ids, num_samples, max_new_tokens, temperature, batch_size, seed, progress, engine, with_logps) -> tuple[list[list[list[int]]], list[torch.Tensor]]:
    """The samples, and with ``with_logps`` (``shared_prefill`` only) each chunk's summed log-probs."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    flat = [ids for ids in prompt_ids for _ in range(num_samples)]
    outputs: list[list[int]] = []
    logps: list[torch.Tensor] = []
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        if seed is not None:
            torch.manual_seed(seed)
        starts = range(0, len(flat), batch_size)
        for start in tqdm(starts, desc="sampling", disable=not progress, leave=False):
            # Chunks of the same rows whatever the engine, so both consume the RNG alike.
            chunk = flat[start : start + batch_size]
            if engine == "shared_prefill":
                decoded, chunk_logps = decode_shared_prefill(model, chunk, max_new_tokens, temperature, pad_id, tokenizer.eos_token_id, with_logps)
                if chunk_logps is not None:
                    logps.append(chunk_logps.cpu())
                generated = decoded.tolist()
            else:
                generated = _generate(model, chunk, max_new_tokens, temperature, pad_id, tokenizer.eos_token_id, device)
            outputs += [cut_at_eos(row, tokenizer.eos_token_id) for row in generated]
    model.train(was_training)
    return [outputs[i * num_samples : (i + 1) * num_samples] for i in range(len(prompt_ids))], logps


ENGINES = ("generate", "shared_prefill")


def _left_padded(rows: list[list[int]], pad_id: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    input_ids = pad_left(rows, pad_id).to(device)
    attention_mask = torch.zeros_like(input_ids)
    for row, ids in enumerate(rows):
        attention_mask[row, input_ids.shape[1] - len(ids) :] = 1
    return input_ids, attention_mask


def _generate(model, rows, max_new_tokens, temperature, pad_id, eos_id, device) -> list[list[int]]:
    input_ids, attention_mask = _left_padded(rows, pad_id, device)
    generated = model.generate(
        input_ids=input_ids,
        attention_mask=attention_mask,
        do_sample=True,
        temperature=temperature,
        top_k=0,
        top_p=1.0,
        max_new_tokens=max_new_tokens,
        pad_token_id=pad_id,
        eos_token_id=eos_id,
        use_cache=True,
    )
    return generated[:, input_ids.shape[1] :].tolist()


@torch.no_grad()
def decode_shared_prefill(
    model: PreTrainedModel, rows: list[list[int]], max_new_tokens: int, temperature: float, pad_id: int, eos_id: int | None, with_logps: bool = False
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Ancestral sampling of ``rows`` (prompt ids, equal prompts adjacent, as k samples per prompt
    are) with ONE prefill per distinct prompt: its KV cache is copied to its rows (``reorder_cache``)
    instead of encoding the prompt k times. The decode loop is ``generate``'s sampling loop without
    its processors and stopping machinery: fp32 logits / temperature, softmax, one multinomial over
    all rows per token (finished rows get ``pad_id``), stop when every row has sampled EOS or after
    ``max_new_tokens``. Returns the new tokens [rows, <= max_new_tokens] (pad after EOS), and with
    ``with_logps`` each row's summed log-prob of its tokens up to EOS under the model's own
    (temperature-1) distribution, read off the logits it sampled from (else None).
    """
    device = next(model.parameters()).device
    first = [i == 0 or rows[i] != rows[i - 1] for i in range(len(rows))]
    owner = torch.tensor(first, device=device).cumsum(0) - 1  # row -> index of its distinct prompt
    input_ids, attention_mask = _left_padded([row for row, new in zip(rows, first) if new], pad_id, device)
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    out = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=True)
    # transformers >= 5 names the cache ``cache``; earlier versions (and wrappers) ``past_key_values``.
    cache_arg = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    cache = out["cache"] if "cache" in out else out["past_key_values"]
    cache.reorder_cache(owner)  # each distinct prompt's keys/values, once per row that samples it
    logits = out.logits[:, -1].float()[owner]
    attention_mask = attention_mask[owner]
    unfinished = torch.ones(len(rows), dtype=torch.long, device=device)
    tokens = []
    logps = torch.zeros(len(rows), device=device)
    for step in range(max_new_tokens):
        scores = logits / temperature if temperature != 1.0 else logits
        next_tokens = torch.multinomial(torch.softmax(scores, dim=-1), num_samples=1).squeeze(1)
        if with_logps:  # the token a row drew while unfinished counts, its EOS included; pads after it do not
            drawn = torch.log_softmax(logits, dim=-1).gather(1, next_tokens[:, None]).squeeze(1)
            logps += torch.where(unfinished.bool(), drawn, torch.zeros_like(drawn))  # where, not *: 0 * -inf is NaN
        next_tokens = next_tokens * unfinished + pad_id * (1 - unfinished)
        tokens.append(next_tokens)
        if eos_id is not None:
            unfinished = unfinished & (next_tokens != eos_id).long()
        if step == max_new_tokens - 1 or not bool(unfinished.any()):
            break
        attention_mask = torch.cat([attention_mask, attention_mask.new_ones(len(rows), 1)], dim=-1)
        position = attention_mask.sum(-1, keepdim=True) - 1
        logits = model(input_ids=next_tokens[:, None], attention_mask=attention_mask, position_ids=position, use_cache=True, **{cache_arg: cache}).logits[:, -1].float()
    return torch.stack(tokens, dim=1), (logps if with_logps else None)
