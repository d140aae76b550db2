"""The compact LM head (lit_align.head): same log-probs and gradients as full logits, fewer positions."""

from __future__ import annotations

import pytest
import torch

from lit_align.head import ChunkedLinearLogProb, completion_logps, split_head
from lit_align.modeling import load_causal_lm, load_tokenizer


def padded_batch(vocab: int):
    """4 rows of different prompt/completion lengths, right-padded, with the masks a collate builds."""
    generator = torch.Generator().manual_seed(0)
    lengths = [(3, 5), (6, 2), (2, 9), (4, 4)]  # (prompt, completion)
    width = max(p + c for p, c in lengths)
    input_ids = torch.zeros(len(lengths), width, dtype=torch.long)
    attention_mask, loss_mask = torch.zeros_like(input_ids), torch.zeros_like(input_ids)
    for row, (p, c) in enumerate(lengths):
        input_ids[row, : p + c] = torch.randint(3, vocab, (p + c,), generator=generator)
        attention_mask[row, : p + c] = 1
        loss_mask[row, p : p + c] = 1
    return input_ids, attention_mask, loss_mask


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return load_causal_lm("embedded:micro", load_tokenizer("embedded:micro")).train()


@pytest.mark.parametrize("chunk_size, keep_max_elements", [(1024, 2**26), (3, 2**26), (3, 0)])  # kept softmax / recomputed in backward
def test_compact_equals_full_logits_values_and_gradients(model, chunk_size, keep_max_elements):
    batch = padded_batch(model.config.vocab_size)
    grads = {}
    for mode in ("full", "compact"):
        model.zero_grad()
        model.eval()  # no dropout: both passes see the same function
        logps = completion_logps(model, *batch, head=mode, chunk_size=chunk_size, keep_max_elements=keep_max_elements)
        (logps.sum * torch.tensor([1.0, -2.0, 0.5, 3.0])).sum().backward()
        grads[mode] = (logps, {n: p.grad.clone() for n, p in model.named_parameters()})
    (full, full_grads), (compact, compact_grads) = grads["full"], grads["compact"]
    torch.testing.assert_close(compact.sum, full.sum, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(compact.count, torch.tensor([5.0, 2.0, 9.0, 4.0]))
    torch.testing.assert_close(compact.count, full.count)
    assert full.sum.abs().min() > 1.0  # real log-probs, not zeros that would trivially agree
    for name, grad in full_grads.items():
        torch.testing.assert_close(compact_grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)
    assert model.get_output_embeddings().weight.grad.abs().sum() > 0  # the head (tied to the embeddings here) gets gradient


@pytest.mark.parametrize("keep_max_elements", [0, 10_000])
def test_chunked_linear_log_prob_gradcheck_with_bias(keep_max_elements):
    generator = torch.Generator().manual_seed(1)
    hidden = torch.randn(7, 5, dtype=torch.float64, generator=generator, requires_grad=True)
    weight = torch.randn(11, 5, dtype=torch.float64, generator=generator, requires_grad=True)
    bias = torch.randn(11, dtype=torch.float64, generator=generator, requires_grad=True)
    labels = torch.randint(0, 11, (7,), generator=generator)
    # The op computes its logsumexp in fp32 (like sequence_logps), so compare to the formula, then
    # check gradients numerically with a tolerance for that fp32 step.
    out = ChunkedLinearLogProb.apply(hidden, weight, bias, labels, 3, torch.float64, keep_max_elements)
    expected = torch.log_softmax((hidden @ weight.T + bias).float(), -1).gather(-1, labels[:, None]).squeeze(-1)
    torch.testing.assert_close(out, expected.detach(), rtol=1e-5, atol=1e-5)
    assert torch.autograd.gradcheck(lambda h, w, b: ChunkedLinearLogProb.apply(h, w, b, labels, 3, torch.float64, keep_max_elements).double(), (hidden, weight, bias), eps=1e-3, atol=1e-3, rtol=1e-3)


def test_bf16_autocast_matches_full_logits_route(model):
    batch = padded_batch(model.config.vocab_size)
    model.eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        full = completion_logps(model, *batch, head="full")
        compact = completion_logps(model, *batch, head="compact")
    # Both project in bf16 and take the logsumexp in fp32; rounding order differs, not the method.
    torch.testing.assert_close(compact.sum, full.sum, rtol=2e-2, atol=5e-2)


def test_models_with_transformed_logits_fall_back_to_full(model):
    import copy

    assert split_head(model) is not None
    capped = copy.deepcopy(model)
    capped.config.final_logit_softcapping = 30.0  # Gemma 2: logits = 30 tanh(logits / 30) in its forward
    assert split_head(capped) is None
    with pytest.raises(ValueError, match="unknown head mode 'partial'"):
        completion_logps(model, *padded_batch(model.config.vocab_size), head="partial")


def test_lora_policy_splits_and_adapter_toggle_changes_compact_logps():
    pytest.importorskip("peft")
    from lit_align.policy import LoraSettings, PolicyWithReference

    torch.manual_seed(0)
    pair = PolicyWithReference(load_causal_lm("embedded:micro", load_tokenizer("embedded:micro")), "adapter", LoraSettings(r=4, alpha=8))
    assert split_head(pair.policy) is not None
    with torch.no_grad():  # make the adapter non-zero (LoRA B starts at 0)
        for name, p in pair.policy.named_parameters():
            if "lora_B" in name:
                p.add_(0.05)
    batch = padded_batch(pair.policy.get_base_model().config.vocab_size)
    pair.eval()
    policy = pair.policy_logps(*batch).sum
    reference = pair.reference_logps(*batch).sum
    pair.head_mode = "full"
    torch.testing.assert_close(pair.policy_logps(*batch).sum, policy, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(pair.reference_logps(*batch).sum, reference, rtol=1e-5, atol=1e-5)
    assert (policy - reference).abs().max() > 1e-3


@pytest.mark.parametrize("keep_max_elements, backward_projections", [(10**6, 0), (0, 3)])
def test_backward_recomputes_the_head_only_beyond_the_keep_budget(monkeypatch, keep_max_elements, backward_projections):
    import lit_align.head as head

    calls, project = [], head._project
    monkeypatch.setattr(head, "_project", lambda *a: calls.append(1) or project(*a))
    hidden, weight = torch.randn(5, 4, requires_grad=True), torch.randn(7, 4, requires_grad=True)
    out = ChunkedLinearLogProb.apply(hidden, weight, None, torch.randint(0, 7, (5,)), 2, torch.float32, keep_max_elements)
    assert len(calls) == 3  # ceil(5 / 2) chunks
    out.sum().backward()
    assert len(calls) - 3 == backward_projections
