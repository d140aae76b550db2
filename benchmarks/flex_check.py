"""Prefix sharing's FlexAttention block mask against the dense mask: forward everywhere, backward on CUDA.

Run by ``benchmarks/gpu_check.sh`` before the table. On CUDA it compares outputs and q/k/v gradients
of the compiled ``flex_attention`` under ``shared_block_mask`` with SDPA under the dense
``SharedLayout.allowed`` mask (fp32, 4 pairs up to ~700 tokens, GQA 14/2 heads), then the training
wiring: log-probs and weight gradients of a 2-layer flex_attention Llama over the shared layout
against its sdpa twin unshared. On CPU (the dry run) only the forwards, since FlexAttention's
backward raises NotImplementedError there (torch 2.13).
Prints one line per check and exits non-zero on a mismatch.
"""

from __future__ import annotations

import os
import sys
import warnings

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from lit_align.data.collate import sequences_with_mask  # noqa: E402
from lit_align.prefix_sharing import share_prefix  # noqa: E402
from lit_align.prefix_sharing_flex import shared_block_mask, shared_flex_attention  # noqa: E402


def main() -> int:
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    generator = torch.Generator().manual_seed(0)
    lengths = [(400, 120, 180), (37, 250, 9), (300, 5, 5), (1, 60, 300)] if cuda else [(9, 3, 5), (2, 6, 1)]
    draw = lambda n: torch.randint(3, 1000, (n,), generator=generator).tolist()  # noqa: E731
    prompts = [draw(p) for p, _, _ in lengths]
    layout = share_prefix(*(t.to(device) for t in sequences_with_mask(prompts * 2, [draw(c) for _, c, _ in lengths] + [draw(r) for _, _, r in lengths], 0)))
    b, t = layout.segment.shape
    q, k, v = (torch.randn(b, heads, t, 64, generator=generator).to(device).requires_grad_(cuda) for heads in (14, 2, 2))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        flex = shared_flex_attention(q, k, v, shared_block_mask(layout))
    dense = F.scaled_dot_product_attention(q, k, v, attn_mask=layout.allowed, enable_gqa=True)
    errors = {"forward": (flex - dense).abs().max().item()}
    if cuda:
        upstream = torch.randn_like(dense)
        flex_grads = torch.autograd.grad(flex, (q, k, v), upstream)
        dense_grads = torch.autograd.grad(dense, (q, k, v), upstream)
        errors.update({f"backward d{name}": (a - c).abs().max().item() for name, a, c in zip("qkv", flex_grads, dense_grads)})
    ok = True
    for name, error in errors.items():
        ok &= error <= 1e-4
        print(f"flex block mask vs dense mask, {name} on {device.type}: max |diff| {error:.2e} ({'ok' if error <= 1e-4 else 'MISMATCH'})")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        errors = model_check(device)
    for name, error in errors.items():
        ok &= error <= 1e-3
        print(f"flex_attention Llama, prefix-shared vs unshared sdpa, {name} on {device.type}: max |diff| {error:.2e} ({'ok' if error <= 1e-3 else 'MISMATCH'})")
    if not cuda:
        print("flex block mask backward: needs CUDA (FlexAttention's backward is not implemented on CPU); not checked")
    return 0 if ok else 1


def model_check(device: torch.device) -> dict[str, float]:
    """The training wiring: log-probs (and on CUDA gradients) of a flex_attention Llama over the shared
    layout (``shared_completion_logps`` hands it the BlockMask) against its sdpa twin, unshared."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from lit_align.head import completion_logps
    from lit_align.prefix_sharing import shared_completion_logps, unsupported_reason

    config = dict(vocab_size=1000, hidden_size=256, intermediate_size=512, num_hidden_layers=2, num_attention_heads=8, num_key_value_heads=2, max_position_embeddings=1024)
    models = []
    for implementation in ("flex_attention", "sdpa"):
        torch.manual_seed(0)
        model = LlamaForCausalLM(LlamaConfig(**config, attn_implementation=implementation))
        with torch.no_grad():  # larger than the 0.02 init, so that a wrong mask moves the log-probs visibly
            for p in model.parameters():
                if p.dim() > 1:
                    p.normal_(0, 0.1)
        models.append(model.to(device))
    flex, sdpa = models
    cuda = device.type == "cuda"
    assert (unsupported_reason(flex) is None) == cuda, unsupported_reason(flex)  # training takes it on CUDA only
    generator = torch.Generator().manual_seed(1)
    draw = lambda n: torch.randint(3, 1000, (n,), generator=generator).tolist()  # noqa: E731
    lengths = [(300, 40, 90), (20, 150, 10), (200, 8, 8)] if cuda else [(9, 3, 5), (2, 6, 1)]
    prompts = [draw(p) for p, _, _ in lengths]
    batch = [t.to(device) for t in sequences_with_mask(prompts * 2, [draw(c) for _, c, _ in lengths] + [draw(r) for _, _, r in lengths], 0)]
    with torch.set_grad_enabled(cuda):
        shared = shared_completion_logps(flex, share_prefix(*batch)).sum
        plain = completion_logps(sdpa, *batch).sum
    if not cuda:
        return {"log-probs": (shared - plain).abs().max().item()}
    shared.sum().backward()
    plain.sum().backward()
    grads = max((a.grad - b.grad).abs().max().item() for a, b in zip(flex.parameters(), sdpa.parameters()))
    return {"log-probs": (shared - plain).abs().max().item(), "gradients": grads}


if __name__ == "__main__":
    sys.exit(main())
