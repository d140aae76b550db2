"""lit_align.online.generation: the shared-prefill sampler draws exactly what model.generate draws for
the same seed (same rows, same RNG order), across chunk boundaries that split a prompt's samples; the
log-probs it reads off its decode loop equal a forward pass's, on the embedded model and on GPT-2,
Qwen2 and Gemma-2 style checkpoints, so SampledEvaluation can skip that pass."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from lit_align.callbacks.sampled_eval import sequence_logps_of
from lit_align.modeling import load_causal_lm, load_tokenizer
from lit_align.online.generation import ENGINES, logps_while_sampling_are_exact, sample_completions, sample_completions_with_logps
from tests.families import FAMILIES, family_checkpoints  # noqa: F401  (fixture)
from tests.test_sampled_evaluation import reference_and_moved_policy


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


# ----- log pi(y|x) read off the decode loop (SampledEvaluation's policy log-probs) -----------------
def forward_logps(model, prompts: list[list[int]], samples: list[list[list[int]]], pad_id: int) -> torch.Tensor:
    flat_prompts = [p for p, per_prompt in zip(prompts, samples) for _ in per_prompt]
    return sequence_logps_of(model, flat_prompts, [c for per_prompt in samples for c in per_prompt], pad_id)


@pytest.mark.parametrize("family", ("embedded",) + FAMILIES)
def test_decode_logps_equal_a_forward_pass_and_the_draws_are_generates(family, family_checkpoints):  # noqa: F811
    name = "embedded:micro" if family == "embedded" else family_checkpoints["models"][family]
    tokenizer = load_tokenizer(name)
    model = load_causal_lm(name, tokenizer)
    prompts = [tokenizer(text)["input_ids"] for text in ("the film was", "i think the food", "a")]
    if family == "embedded":
        # A random model rarely draws its EOS: call the token it drew most "EOS" (only ids are read), so
        # that rows end early, beside rows that run to the cap, and their pads after EOS must not count.
        drawn = [t for per_prompt in sample_completions(model, tokenizer, prompts, 3, 12, seed=3) for c in per_prompt for t in c]
        tokenizer = SimpleNamespace(pad_token_id=tokenizer.pad_token_id, eos_token_id=max(set(drawn), key=drawn.count))
    # batch_size 4 splits a prompt's 3 samples over two chunks.
    samples, logps = sample_completions_with_logps(model, tokenizer, prompts, 3, 40, batch_size=4, seed=3)
    assert samples == sample_completions(model, tokenizer, prompts, 3, 40, batch_size=4, seed=3)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    expected = forward_logps(model, prompts, samples, pad_id).view(3, 3)
    assert logps.shape == (3, 3) and (expected < -1).all()  # whole sequences of a random model: several nats each
    torch.testing.assert_close(logps, expected, atol=2e-4, rtol=1e-5)
    if family == "embedded":  # rows that ended at EOS before the cap, beside rows that ran to it
        lengths = [len(c) for per_prompt in samples for c in per_prompt]
        assert min(lengths) < 40 and max(lengths) == 40 and all(c[-1] == tokenizer.eos_token_id for per_prompt in samples for c in per_prompt if len(c) < 40)


def test_sampled_evaluation_kl_is_the_same_from_either_engine():
    from lit_align.callbacks import SampledEvaluation
    from lit_align.data.sft import SFTDataModule

    data = SFTDataModule(model="embedded:micro", dataset="embedded:demonstrations", batch_size=2, num_examples=8, num_val_examples=8)
    data.setup()
    reference, policy = reference_and_moved_policy()
    measured = {engine: SampledEvaluation(num_prompts=6, samples_per_prompt=3, max_new_tokens=10, engine=engine).measure(policy, data, reference) for engine in ENGINES}
    shared, generate = measured["shared_prefill"], measured["generate"]
    assert shared["eval/length"] == generate["eval/length"] and shared["eval/reward"] == generate["eval/reward"]  # the same draws
    assert shared["eval/kl"] > 0.01
    assert shared["eval/kl"] == pytest.approx(generate["eval/kl"], abs=1e-5)
    assert shared["eval/kl_se"] == pytest.approx(generate["eval/kl_se"], abs=1e-5)
    # Identical models read KL 0 from the decode loop's log-probs too (to fp32 rounding, not bf16's).
    assert abs(SampledEvaluation(num_prompts=6, samples_per_prompt=3, max_new_tokens=10).measure(reference, data, load_causal_lm("embedded:micro"))["eval/kl"]) < 1e-5


def test_decode_logps_are_used_only_for_fp32_outside_autocast():
    model = load_causal_lm("embedded:micro")
    assert logps_while_sampling_are_exact(model)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not logps_while_sampling_are_exact(model)
    precision = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("high")  # TF32 matmuls where the hardware has them
        assert not logps_while_sampling_are_exact(model)
    finally:
        torch.set_float32_matmul_precision(precision)
    assert not logps_while_sampling_are_exact(model.to(torch.bfloat16))
