"""Prefix sharing's FlexAttention block mask against the dense mask: forward everywhere, backward on CUDA.

Run by ``benchmarks/gpu_check.sh`` before the table. On CUDA it compares outputs and q/k/v gradients
of the compiled ``flex_attention`` under ``shared_block_mask`` with SDPA under the dense
``SharedLayout.allowed`` mask (fp32, 4 pairs up to ~700 tokens, GQA 14/2 heads); on CPU (the dry
run) only the forward, since FlexAttention's backward raises NotImplementedError there (torch 2.13).
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
    if not cuda:
        print("flex block mask backward: needs CUDA (FlexAttention's backward is not implemented on CPU); not checked")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
