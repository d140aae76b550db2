"""The FlexAttention block mask of prefix sharing (lit_align.prefix_sharing_flex): same attention
forward as the dense shared-prefix mask under SDPA, on CPU (FlexAttention's backward is CUDA-only
in torch 2.13; benchmarks/flex_check.py checks it on the GPU machine)."""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F

from lit_align.data.collate import sequences_with_mask
from lit_align.prefix_sharing import share_prefix
from lit_align.prefix_sharing_flex import shared_block_mask, shared_flex_attention


def _layout():
    # Two pairs of different lengths: (prompt, chosen, rejected) = (5, 3, 2) and (2, 1, 5); the second
    # row is padded, so all three rules and the padding self-attention are exercised.
    prompts, chosen, rejected = [[5, 6, 7, 8, 9], [4, 4]], [[11, 12, 13], [14]], [[21, 22], [23, 24, 25, 26, 27]]
    return share_prefix(*sequences_with_mask(prompts * 2, chosen + rejected, 0))


def test_block_mask_forward_matches_dense_mask_sdpa():
    layout = _layout()
    b, t = layout.segment.shape
    assert (b, t) == (2, 10) and (layout.segment == 3).any()  # padded
    generator = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(b, heads, t, 8, generator=generator) for heads in (4, 2, 2))  # GQA 4/2
    dense = F.scaled_dot_product_attention(q, k, v, attn_mask=layout.allowed, enable_gqa=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "called without torch.compile": the unfused CPU path is the reference here
        # Block size 4 < T: some tiles are skipped whole, others partly masked, so both paths are used.
        for block_size in (4, 128):
            flex = shared_flex_attention(q, k, v, shared_block_mask(layout, block_size=block_size))
            torch.testing.assert_close(flex, dense, rtol=0, atol=1e-5)
        # Teeth: a plain causal mask (rejected sees chosen) gives different outputs.
        causal = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        assert (causal - dense).abs().max() > 1e-2


def test_block_mask_is_the_dense_mask():
    layout = _layout()
    block = shared_block_mask(layout, block_size=4)
    b, t = layout.segment.shape
    index = torch.arange(t)
    dense = torch.stack([block.mask_mod(torch.tensor(i), None, index[:, None], index[None, :]) for i in range(b)])
    assert torch.equal(dense, layout.allowed[:, 0])


def test_flex_model_runs_the_shared_layout_through_the_block_mask():
    """The wiring: a flex_attention model gets the BlockMask (same log-probs as its unshared sdpa twin,
    forward only on CPU) and is refused for training on CPU, where the backward is missing."""
    from lit_align.head import completion_logps
    from lit_align.prefix_sharing import shared_completion_logps, unsupported_reason
    from tests.test_prefix_sharing import pair_batch, tiny_model

    flex, sdpa = tiny_model("llama", "flex_attention"), tiny_model("llama", "sdpa")  # same seed, same weights
    batch = pair_batch()
    layout = share_prefix(*batch)
    assert "CUDA only" in unsupported_reason(flex)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        shared = shared_completion_logps(flex, layout)
        reference = completion_logps(sdpa, *batch)
        torch.testing.assert_close(shared.sum, reference.sum, rtol=0, atol=1e-5)
        # Teeth: without the rejected-never-sees-chosen rule the flex model's numbers move.
        layout.segment = layout.segment.masked_fill(layout.segment == 2, 1)  # rejected relabelled chosen
        assert (shared_completion_logps(flex, layout).sum - reference.sum).abs().max() > 0.1
