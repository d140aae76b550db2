"""Completion log-probs straight from hidden states: the LM head only where the loss looks.

Every preference loss needs log pi(y|x) summed over the completion tokens, nothing else. The usual
route (``model(...).logits`` then a log-softmax) projects EVERY position — prompt, completion and
padding — through the ``[hidden, vocab]`` head and keeps the ``[B, T, V]`` logits (plus their
softmax for backward) alive until the backward pass. With a real vocabulary (32k-150k) that
tensor, not the model, is what fills memory, and the head's matmul is a large share of the FLOPs.

``completion_logps`` runs the model's backbone, gathers the hidden states of the positions whose
next token is a completion token, and projects only those, in chunks, through
``ChunkedLinearLogProb``. Forward keeps the softmax of the completion positions only while that is
small (``KEEP_MAX_ELEMENTS``); beyond it, it keeps only each token's logsumexp and backward
recomputes each chunk's logits, so peak extra memory is ``chunk_size x V`` instead of ``B x T x V``
at the cost of one more head matmul per chunk. Same role as the "fused linear cross
entropy" kernels of Liger or TRL's fused LM head, in plain torch so it runs on CPU too.

``scored_token_logps`` is the same projection for layouts where a position's next token is not the
one it predicts (prefix-shared rows: ``lit_align.prefix_sharing``); it takes a 4D mask and position
ids and scores an explicit list of (source position, label) pairs, in both head modes.

Models whose head is not a plain linear map (soft-capped or scaled logits, e.g. Gemma 2, Cohere),
models without an exposed backbone, and FSDP-wrapped modules (whose root unit must run its own
forward to gather the head's shards) fall back to full logits: same numbers, usual memory.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from lit_align.ops import SequenceLogps, sequence_logps, token_logps

HeadMode = Literal["compact", "full"]
HEAD_MODES = ("compact", "full")
# Up to this many [completion tokens x vocab] probabilities (fp32: 256 MB) are kept from forward
# for backward; beyond it each chunk's logits are recomputed in backward (memory O(chunk x vocab)).
KEEP_MAX_ELEMENTS = 2**26
# Config fields that change logits after the linear head; a model that sets any to a non-trivial
# value keeps the full-logits path (its own forward applies them).
_LOGIT_TRANSFORMS = ("final_logit_softcapping", "logit_scale", "output_multiplier", "lm_head_multiplier", "logits_scaling")


class ChunkedLinearLogProb(torch.autograd.Function):
    """log softmax(h W^T + b)[label] for N rows of ``h`` [N, H], computed ``chunk_size`` rows at a time.

    Logits are formed in the matmul dtype (bf16 under autocast) and upcast to fp32 before the
    logsumexp, exactly as ``lit_align.ops.sequence_logps`` treats full logits.
    """

    @staticmethod
    def forward(ctx, hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, labels: torch.Tensor, chunk_size: int, dtype: torch.dtype, keep_max_elements: int = 0):
        out = torch.empty(hidden.shape[0], dtype=torch.float32, device=hidden.device)
        lse = torch.empty_like(out)
        w = weight.to(dtype)
        b = None if bias is None else bias.to(dtype)
        # Small enough: keep the softmax for backward instead of recomputing the head matmul there.
        keep = any(ctx.needs_input_grad[:3]) and hidden.shape[0] * weight.shape[0] <= keep_max_elements
        kept = []
        for start in range(0, hidden.shape[0], chunk_size):
            rows = slice(start, start + chunk_size)
            logits = _project(hidden[rows].to(dtype), w, b)
            lse[rows] = torch.logsumexp(logits, dim=-1)
            out[rows] = logits.gather(-1, labels[rows].unsqueeze(-1)).squeeze(-1) - lse[rows]
            if keep:
                kept.append(logits.sub_(lse[rows].unsqueeze(-1)).exp_())
        ctx.save_for_backward(hidden, weight, bias, labels, lse)
        ctx.chunk_size, ctx.dtype, ctx.kept = chunk_size, dtype, kept
        return out

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        hidden, weight, bias, labels, lse = ctx.saved_tensors
        dtype, kept = ctx.dtype, ctx.kept
        ctx.kept = None
        need_h, need_w, need_b = ctx.needs_input_grad[0], ctx.needs_input_grad[1], bias is not None and ctx.needs_input_grad[2]
        w = weight.to(dtype)
        b = None if bias is None else bias.to(dtype)
        grad_h = torch.empty_like(hidden) if need_h else None
        grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if need_w else None
        grad_b = torch.zeros(bias.shape, dtype=torch.float32, device=bias.device) if need_b else None
        for i, start in enumerate(range(0, hidden.shape[0], ctx.chunk_size)):
            rows = slice(start, start + ctx.chunk_size)
            h = hidden[rows].to(dtype)
            probs = kept[i] if kept else torch.exp(_project(h, w, b) - lse[rows].unsqueeze(-1))
            # d/dlogits of (logits[y] - logsumexp(logits)) = onehot(y) - softmax(logits)
            grad_logits = probs.mul_(-grad_out[rows].unsqueeze(-1))
            grad_logits.scatter_add_(-1, labels[rows].unsqueeze(-1), grad_out[rows].unsqueeze(-1))
            if need_h:
                grad_h[rows] = (grad_logits.to(dtype) @ w).to(hidden.dtype)
            if need_w:
                grad_w += grad_logits.t() @ h.float()
            if need_b:
                grad_b += grad_logits.sum(0)
        return (grad_h, None if grad_w is None else grad_w.to(weight.dtype), None if grad_b is None else grad_b.to(bias.dtype), None, None, None, None)


def _project(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    logits = hidden @ weight.t()
    if bias is not None:
        logits = logits + bias
    return logits.float()


def _unwrapped(model: nn.Module) -> nn.Module:
    """The transformers model under a peft wrapper (LoRA layers live inside its modules)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def backbone_of(model: nn.Module) -> nn.Module | None:
    """The decoder stack a causal LM's own forward runs before its head, or None if it exposes none."""
    base = _unwrapped(model)
    backbone = base.get_decoder() if hasattr(base, "get_decoder") else None
    return backbone if isinstance(backbone, nn.Module) and backbone is not base else None


def split_head(model: nn.Module) -> tuple[nn.Module, nn.Linear] | None:
    """(backbone, linear head) of a causal LM whose logits are exactly ``head(backbone(x))``, else None."""
    if any(type(m).__name__ == "FullyShardedDataParallel" or type(m).__name__.startswith("FSDP") for m in (model, *model.children())):
        return None
    base = _unwrapped(model)
    backbone = backbone_of(model)
    if backbone is None or not hasattr(base, "get_output_embeddings"):
        return None
    config = getattr(base, "config", None)
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    if any(getattr(text_config, name, None) not in (None, 1, 1.0) for name in _LOGIT_TRANSFORMS):
        return None
    head = base.get_output_embeddings()
    if type(head) is not nn.Linear:
        return None
    return backbone, head


def completion_logps(
    model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, loss_mask: torch.Tensor, head: HeadMode = "compact", chunk_size: int = 1024, keep_max_elements: int = KEEP_MAX_ELEMENTS
) -> SequenceLogps:
    """log pi(y|x) of each row, summed over the positions where ``loss_mask`` is 1 (see module docstring).

    ``head="full"`` (or a model ``split_head`` cannot split) takes the usual ``model(...).logits`` route.
    """
    if head not in HEAD_MODES:
        raise ValueError(f"unknown head mode {head!r}; expected one of {', '.join(HEAD_MODES)}")
    parts = split_head(model) if head == "compact" else None
    if parts is None:
        logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits
        return sequence_logps(logits, input_ids, loss_mask)
    # Position t predicts token t+1: keep the positions whose NEXT token is a completion token.
    mask = loss_mask[:, 1:].bool()
    rows = mask.nonzero(as_tuple=True)[0]
    values = _compact_token_logps(parts, input_ids, attention_mask, mask, chunk_size, keep_max_elements)
    sums = torch.zeros(input_ids.shape[0], dtype=torch.float32, device=input_ids.device).index_add(0, rows, values)
    return SequenceLogps(sum=sums, count=mask.sum(-1).to(torch.float32))


def completion_token_logps(
    model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, loss_mask: torch.Tensor, head: HeadMode = "compact", chunk_size: int = 1024, keep_max_elements: int = KEEP_MAX_ELEMENTS
) -> torch.Tensor:
    """Per-token log pi(token_{t+1} | tokens_<=t), fp32 [B, T-1], at the positions whose next token is a
    completion token (``loss_mask[:, 1:]``) and 0 elsewhere: what ``completion_logps`` sums, kept per
    token for token-level losses (PPO, GRPO). Same two head modes."""
    if head not in HEAD_MODES:
        raise ValueError(f"unknown head mode {head!r}; expected one of {', '.join(HEAD_MODES)}")
    mask = loss_mask[:, 1:].bool()
    parts = split_head(model) if head == "compact" else None
    if parts is None:
        logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits
        return token_logps(logits, input_ids).masked_fill(~mask, 0.0)
    values = _compact_token_logps(parts, input_ids, attention_mask, mask, chunk_size, keep_max_elements)
    return torch.zeros(mask.shape, dtype=torch.float32, device=input_ids.device).masked_scatter(mask, values)


def _compact_token_logps(parts: tuple[nn.Module, nn.Linear], input_ids: torch.Tensor, attention_mask: torch.Tensor, mask: torch.Tensor, chunk_size: int, keep_max_elements: int) -> torch.Tensor:
    """The log-probs [N] of the N positions where ``mask`` [B, T-1] is set, through the chunked head only."""
    backbone, linear = parts
    hidden = backbone(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state
    return ChunkedLinearLogProb.apply(hidden[:, :-1][mask], linear.weight, linear.bias, input_ids[:, 1:][mask], chunk_size, _head_dtype(hidden), keep_max_elements)


def _head_dtype(hidden: torch.Tensor) -> torch.dtype:
    return torch.get_autocast_dtype(hidden.device.type) if torch.is_autocast_enabled(hidden.device.type) else hidden.dtype


def scored_token_logps(
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    position_ids: torch.Tensor,
    rows: torch.Tensor,
    sources: torch.Tensor,
    labels: torch.Tensor,
    head: HeadMode = "compact",
    chunk_size: int = 1024,
    keep_max_elements: int = KEEP_MAX_ELEMENTS,
) -> torch.Tensor:
    """log pi(labels[n] | the context seen at position (rows[n], sources[n])) for N scored tokens, fp32 [N].

    For row layouts where the token a position predicts is not simply the next one in the row
    (prefix sharing puts the first rejected token after the chosen ones, but it is predicted from
    the last prompt position). ``attention_mask`` is the model-ready 4D mask and ``position_ids``
    the positions of each token; both head modes score exactly the listed positions.
    """
    if head not in HEAD_MODES:
        raise ValueError(f"unknown head mode {head!r}; expected one of {', '.join(HEAD_MODES)}")
    inputs = dict(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False)
    parts = split_head(model) if head == "compact" else None
    if parts is None:
        # Same upcast-then-logsumexp as ops.sequence_logps, on the scored positions only.
        logits = model(**inputs).logits[rows, sources].float()
        return logits.gather(-1, labels.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)
    backbone, linear = parts
    hidden = backbone(**inputs).last_hidden_state
    return ChunkedLinearLogProb.apply(hidden[rows, sources], linear.weight, linear.bias, labels, chunk_size, _head_dtype(hidden), keep_max_elements)
