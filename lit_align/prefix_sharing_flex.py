"""Prefix sharing as a FlexAttention ``BlockMask``: the same three rules, without a dense [T, T] mask.

``lit_align.prefix_sharing`` hands the model a dense 4D mask. On GPU a dense mask rules out the
flash kernels (SDPA falls back to its memory-efficient kernel, which reads the whole mask).
FlexAttention instead takes a ``mask_mod(b, h, q, k) -> bool`` and a ``BlockMask`` built from it,
which skips the [128 x 128] tiles that are fully masked (the chosen block seen from the rejected
queries, and everything above the diagonal). ``shared_mask_mod`` states the rules of
``share_prefix`` on the layout's segment ids (prompt 0, chosen 1, rejected 2, padding 3):

* causal: query ``q`` sees key ``k <= q``;
* padding keys are never seen, and rejected queries never see chosen keys;
* every query sees itself (a padding query would otherwise have a fully masked softmax row).

Wiring: a model loaded with ``attn_implementation="flex_attention"`` on CUDA runs prefix sharing
with this block mask (``prefix_sharing.shared_completion_logps``; transformers passes a
``BlockMask`` through to its flex attention as given), and ``auto`` / ``true`` accept it there.
On CPU such a model runs unshared (``unsupported_reason``): FlexAttention's backward raises
NotImplementedError there in torch 2.13. sdpa/eager models keep the dense mask everywhere; flex
is opt-in through the model's attention implementation, not switched on automatically.
Tested on CPU: the block mask's forward against the dense-mask SDPA forward, and a flex model's
shared log-probs against the unshared ones, without gradients (``tests/test_prefix_sharing_flex.py``).
The backward is checked by ``benchmarks/flex_check.py`` (run by ``benchmarks/gpu_check.sh``) on
the GPU machine; it has not run yet.
"""

from __future__ import annotations

import functools

import torch
from torch.nn.attention.flex_attention import BlockMask, create_block_mask, flex_attention

from lit_align.prefix_sharing import CHOSEN, PADDING, REJECTED, SharedLayout


def shared_mask_mod(segment: torch.Tensor):
    """``mask_mod`` of the shared layout whose columns have segment ids ``segment`` [B, T]."""

    def mask_mod(b, h, q, k):
        query, key = segment[b, q], segment[b, k]
        allowed = (q >= k) & (key != PADDING) & ~((query == REJECTED) & (key == CHOSEN))
        return allowed | (q == k)

    return mask_mod


def shared_block_mask(layout: SharedLayout | torch.Tensor, block_size: int = 128) -> BlockMask:
    """The ``BlockMask`` of a shared layout (or of its segment ids [B, T]), one head-broadcast mask per row."""
    segment = layout.segment if isinstance(layout, SharedLayout) else layout
    b, t = segment.shape
    # Built once per batch; eager construction evaluates mask_mod on every (q, k) once, like the dense mask.
    return create_block_mask(shared_mask_mod(segment), b, None, t, t, device=segment.device, BLOCK_SIZE=block_size)


def shared_flex_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, block_mask: BlockMask) -> torch.Tensor:
    """Scaled dot-product attention [B, H, T, D] under the shared layout's block mask (GQA: fewer key heads)."""
    # Uncompiled, flex_attention materialises the scores (fine for the CPU check); compiled, it is one
    # fused kernel that skips the masked tiles, which is the point on GPU.
    attend = _compiled_flex() if query.is_cuda else flex_attention
    return attend(query, key, value, block_mask=block_mask, enable_gqa=query.shape[1] != key.shape[1])


@functools.lru_cache(maxsize=1)
def _compiled_flex():
    return torch.compile(flex_attention)
