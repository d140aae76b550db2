"""Prefix sharing: the prompt of a preference pair is computed once (Wang et al. 2024, arXiv 2410.20305).

A pairwise batch holds 2B rows, prompt+chosen then prompt+rejected, so every prompt token goes
through the model twice. With prefix sharing each pair becomes ONE row ``[prompt | chosen |
rejected]`` (Wang et al., Sec. 3, Fig. 1):

* **mask** — prompt and chosen tokens are causal over what precedes them; rejected tokens attend to
  the prompt and to earlier rejected tokens, never to chosen ones. So every rejected token sees
  exactly the context it sees in its own prompt+rejected row.
* **positions** — the rejected part's position ids continue from the end of the prompt (the
  first rejected token gets position ``len(prompt)``, as in its own row).
* **scoring** — the first rejected token is predicted by the LAST PROMPT position, not by the
  position just before it in the shared row (the last chosen token); ``head.scored_token_logps``
  reads each completion token's log-prob at its true source position.
* **padding** — rows are right-padded to the longest shared row; padding keys are masked and each
  padding query attends to itself (a fully masked softmax row would be NaN), its output unused.

The result is the same ``SequenceLogps`` (sum, count) per chosen/rejected row as the 2B forward,
up to float summation order (tests: <= 1e-5 per token in fp32 on Llama, Qwen2 and GPT-2 models).
The saving is the prompt's share of the tokens: large for long prompts (multi-turn chat), small
for short ones, where the one [T, T] mask per row is the main extra cost.

Kernels: the mask goes to the model as an explicit 4D mask with ``position_ids``. In transformers
5.x every decoder built on ``masking_utils.create_causal_mask`` returns a 4D mask as given, and its
``sdpa`` (bool mask) and ``eager`` (additive float mask) attention apply it; that covers Llama,
Qwen2, Mistral, Gemma, GPT-2 and most current decoders. ``unsupported_reason`` falls back to the
unshared 2B forward, with one warning per reason, for: other attention implementations
(flash-attention takes no dense mask; ``flex_attention`` gets a ``BlockMask`` of the same three
rules from ``lit_align.prefix_sharing_flex``, on CUDA only: its backward is not implemented on CPU
in torch 2.13), ALiBi models (Bloom, MPT, Falcon with ``alibi``:
their bias is rebuilt from a 2D mask), decoders that do not build their mask with
``create_causal_mask``, and sliding-window attention shorter than the pair's longest sequence (a
custom 4D mask would bypass the window). On GPU, SDPA with a dense mask runs the memory-efficient
kernel rather than flash attention.

The setting (``prefix_sharing`` of pairwise algorithms, ``check_setting``): ``true`` shares every
batch the model can take (warning once when it cannot), ``false`` never shares, and ``auto`` (the
default) shares a batch only when the model takes the mask (``unsupported_reason``; the reason
is said once at start-up by ``announce``) and the batch pays (``pays_off``): its B shared rows hold
at most 3/4 of the padded token positions of the 2B unshared rows,
``B * T_shared <= 0.75 * 2B * T_unshared``. Every decoder matmul scales with token positions; for
pairs of equal lengths (prompt P, completions Y) the ratio is (P + 2Y) / (2P + 2Y), at most 3/4
exactly when P >= Y, where attention (which grows as T^2, and is no larger shared only when
P^2 >= 2 C R) is at most 9/8 of the unshared one. Short prompts stay unshared, so the dense
mask's cost (and on GPU the lost flash kernel) is paid only where at least a quarter of the token
positions are saved. The rule reads two sums over the masks per batch, nothing more.
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass

import torch
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import nn

from lit_align.errors import ConfigError
from lit_align.head import HeadMode, _unwrapped, backbone_of, scored_token_logps
from lit_align.ops import SequenceLogps

# (prompt, chosen, rejected, padding) segment ids of a shared row.
PROMPT, CHOSEN, REJECTED, PADDING = 0, 1, 2, 3
_MASK_IMPLEMENTATIONS = ("sdpa", "eager")
_ALIBI_MODEL_TYPES = ("bloom", "mpt")
_warned: set[str] = set()
_announced: set[str] = set()
# auto: share when the shared rows hold at most this share of the unshared rows' token positions
# (equal lengths: when the prompt is at least as long as a completion; module docstring).
AUTO_MAX_POSITION_RATIO = 0.75


@dataclass
class SharedLayout:
    """B pairs as B rows ``[prompt | chosen | rejected]`` plus where each completion token is scored.

    ``allowed[b, 0, q, k]`` says whether query ``q`` may attend to key ``k``; ``rows``/``sources``
    /``targets`` list the N scored tokens (token at ``targets`` predicted from ``sources``) and
    ``out_rows`` the row of the usual 2B layout each belongs to (chosen i -> i, rejected i -> B + i).
    """

    input_ids: torch.Tensor
    position_ids: torch.Tensor
    allowed: torch.Tensor
    rows: torch.Tensor
    sources: torch.Tensor
    targets: torch.Tensor
    out_rows: torch.Tensor
    count: torch.Tensor
    longest_sequence: int
    segment: torch.Tensor  # [B, T] PROMPT/CHOSEN/REJECTED/PADDING of each column (the block mask reads it)

    @property
    def num_rows(self) -> int:
        """Rows of the unshared layout (2B)."""
        return self.count.shape[0]


def _check_pair_rows(input_ids: torch.Tensor, attention_mask: torch.Tensor, loss_mask: torch.Tensor, lengths: torch.Tensor, prompt: torch.Tensor) -> None:
    # The layout is exact only for rows built like data.collate.sequences_with_mask: right padding,
    # one contiguous completion after the prompt, and the same prompt on both sides of a pair.
    b = input_ids.shape[0] // 2
    columns = torch.arange(input_ids.shape[1], device=input_ids.device)
    real = columns < lengths[:, None]
    problems = []
    if not torch.equal(attention_mask.bool(), real):
        problems.append("attention_mask is not right padding (1s then 0s)")
    if not torch.equal(loss_mask.bool(), real & (columns >= prompt[:, None])):
        problems.append("loss_mask is not one contiguous completion after the prompt")
    if not torch.equal(prompt[:b], prompt[b:]) or not bool(((input_ids[:b] == input_ids[b:]) | (columns >= prompt[:b, None])).all()):
        problems.append("rows i and B+i do not share the same prompt")
    if problems:
        raise ValueError(f"prefix sharing needs pairwise batches as PairwiseDataModule collates them; this batch: {'; '.join(problems)}")


def share_prefix(input_ids: torch.Tensor, attention_mask: torch.Tensor, loss_mask: torch.Tensor) -> SharedLayout:
    """The shared layout of a 2B-row pairwise batch (rows [0, B) prompt+chosen, [B, 2B) prompt+rejected)."""
    if input_ids.shape[0] % 2:
        raise ValueError(f"a pairwise batch has an even number of rows (chosen then rejected), got {input_ids.shape[0]}")
    b, width, device = input_ids.shape[0] // 2, input_ids.shape[1], input_ids.device
    columns = torch.arange(width, device=device)
    lengths = attention_mask.sum(-1)
    # amin, not min(dim): the latter also computes indices and is ~1000x slower on CPU (torch 2.13).
    prompt_all = torch.where(loss_mask.bool(), columns, width).amin(-1).minimum(lengths)
    _check_pair_rows(input_ids, attention_mask, loss_mask, lengths, prompt_all)
    prompt, chosen, rejected = prompt_all[:b, None], (lengths[:b] - prompt_all[:b])[:, None], (lengths[b:] - prompt_all[:b])[:, None]
    total = prompt + chosen + rejected
    j = torch.arange(int(total.max()) if b else 0, device=device)[None, :]
    segment = torch.full((b, j.shape[1]), PADDING, dtype=torch.long, device=device)
    segment[j < total] = REJECTED
    segment[j < prompt + chosen] = CHOSEN
    segment[j < prompt] = PROMPT
    rejected_part = segment == REJECTED
    pair = torch.arange(b, device=device)[:, None]
    # Prompt and chosen are read from row i as they are; rejected token k from row B+i, column prompt+k.
    shared_ids = input_ids[torch.where(rejected_part, pair + b, pair), torch.where(rejected_part, j - chosen, j).clamp(max=width - 1)]
    position_ids = torch.where(rejected_part, j - chosen, j).masked_fill(segment == PADDING, 0)
    query, key = segment[:, :, None], segment[:, None, :]
    allowed = (j[:, :, None] >= j[:, None, :]) & (key != PADDING) & ~((query == REJECTED) & (key == CHOSEN))
    allowed |= torch.eye(j.shape[1], dtype=torch.bool, device=device)
    # Token t is predicted from t-1, except the first rejected token: from the last prompt token.
    sources = torch.where(rejected_part & (j == prompt + chosen), prompt - 1, j - 1)
    scored = (segment == CHOSEN) | rejected_part
    scored &= sources >= 0  # an empty prompt leaves the first completion token unscored, as unshared
    rows, targets = scored.nonzero(as_tuple=True)
    out_rows = rows + b * rejected_part[rows, targets].long()
    count = torch.zeros(2 * b, dtype=torch.float32, device=device).index_add_(0, out_rows, torch.ones_like(out_rows, dtype=torch.float32))
    return SharedLayout(shared_ids, position_ids, allowed[:, None], rows, sources[rows, targets], targets, out_rows, count, int(lengths.max()) if b else 0, segment)


def _config_of(model: nn.Module):
    base = _unwrapped(model)
    base = getattr(base, "module", base)  # FSDP (v1) / DDP wrappers
    return getattr(base, "config", None)


@functools.lru_cache(maxsize=None)
def _decoder_reason(decoder: type) -> str | None:
    # Read once per class: decoders built on create_causal_mask pass a 4D mask through unchanged.
    try:
        source = inspect.getsource(decoder.forward)
    except (OSError, TypeError):
        source = ""
    if "create_causal_mask" not in source and "create_sliding_window_causal_mask" not in source:
        return f"{decoder.__name__} does not build its mask with transformers' create_causal_mask"
    if "position_ids" not in inspect.signature(decoder.forward).parameters:
        return f"{decoder.__name__} takes no position_ids"
    return None


def unsupported_reason(model: nn.Module, longest_sequence: int = 0) -> str | None:
    """Why ``model`` cannot run the shared layout exactly (see module docstring), or None if it can."""
    config = _config_of(model)
    if config is None:
        return f"{type(model).__name__} has no transformers config"
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    implementation = getattr(config, "_attn_implementation", None)
    if implementation == "flex_attention":
        # A BlockMask of the same rules (prefix_sharing_flex); its backward is CUDA-only in torch 2.13.
        if next(model.parameters()).device.type != "cuda":
            return "flex_attention's backward with a block mask runs on CUDA only (torch 2.13); on CPU use sdpa or eager"
    elif implementation not in _MASK_IMPLEMENTATIONS:
        return f"attention implementation {implementation!r} takes no custom 4D mask here (sdpa and eager do; flex_attention on CUDA)"
    if getattr(text, "model_type", "") in _ALIBI_MODEL_TYPES or getattr(text, "alibi", False):
        return f"{getattr(text, 'model_type', '?')} uses ALiBi, whose bias is built from a 2D mask"
    backbone = backbone_of(getattr(_unwrapped(model), "module", _unwrapped(model)))
    reason = _decoder_reason(type(backbone)) if backbone is not None else f"{type(model).__name__} exposes no decoder"
    if reason is not None:
        return reason
    window = getattr(text, "sliding_window", None)
    if window is not None and getattr(text, "use_sliding_window", True) and longest_sequence > window:
        return f"sliding-window attention ({window} tokens) is shorter than this batch's longest sequence ({longest_sequence})"
    return None


def supports_prefix_sharing(model: nn.Module, longest_sequence: int = 0) -> bool:
    """True if ``model`` can run the shared layout; otherwise warns once per reason and returns False."""
    reason = unsupported_reason(model, longest_sequence)
    if reason is not None and reason not in _warned:
        _warned.add(reason)
        rank_zero_warn(f"lit_align: prefix sharing is off for this model ({reason}); using the unshared chosen+rejected forward, same results")
    return reason is None


def model_attention_mask(model: nn.Module, allowed: torch.Tensor) -> torch.Tensor:
    """``allowed`` in the form the model's attention takes: bool for sdpa, additive float for eager."""
    config = _config_of(model)
    if getattr(config, "_attn_implementation", None) == "sdpa":
        return allowed
    dtype = next(model.parameters()).dtype
    return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill_(~allowed, torch.finfo(dtype).min)


def shared_completion_logps(model: nn.Module, layout: SharedLayout, head: HeadMode = "compact", **head_options) -> SequenceLogps:
    """log pi(y|x) of the 2B chosen/rejected rows from one forward over the B shared rows."""
    if getattr(_config_of(model), "_attn_implementation", None) == "flex_attention":
        from lit_align.prefix_sharing_flex import shared_block_mask  # it imports this module

        mask = shared_block_mask(layout)  # transformers passes a BlockMask through to flex_attention as given
    else:
        mask = model_attention_mask(model, layout.allowed)
    labels = layout.input_ids[layout.rows, layout.targets]
    token_logps = scored_token_logps(model, layout.input_ids, mask, layout.position_ids, layout.rows, layout.sources, labels, head, **head_options)
    sums = torch.zeros(layout.num_rows, dtype=torch.float32, device=token_logps.device).index_add(0, layout.out_rows, token_logps)
    return SequenceLogps(sum=sums, count=layout.count)


def pair_layout(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, loss_mask: torch.Tensor) -> SharedLayout | None:
    """The shared layout of a pairwise batch, or None (after a one-time warning) when ``model`` cannot use it."""
    longest = int(attention_mask.sum(-1).max()) if attention_mask.numel() else 0
    if not supports_prefix_sharing(model, longest):
        return None
    return share_prefix(input_ids, attention_mask, loss_mask)


def check_setting(value: object) -> bool | str:
    """``prefix_sharing`` as given, or a ConfigError naming the allowed values."""
    if isinstance(value, bool) or value == "auto":
        return value
    raise ConfigError(
        f"prefix_sharing: {value!r} is not a setting; use true (share every pair the model can take), "
        "false (never: the usual chosen+rejected forward) or auto (the default: share when the model's "
        "attention takes the 4D mask and the batch's prompts are long enough to pay)"
    )


def pays_off(attention_mask: torch.Tensor, loss_mask: torch.Tensor) -> bool:
    """The ``auto`` rule (module docstring): B * T_shared <= 0.75 * 2B * T_unshared, padded widths."""
    b = attention_mask.shape[0] // 2
    if b == 0:
        return False
    lengths = attention_mask.sum(-1)
    prompt = lengths[:b] - loss_mask[:b].sum(-1)  # rows are right-padded, one completion after the prompt
    shared_width = int((lengths[:b] + lengths[b:] - prompt).max())
    return b * shared_width <= AUTO_MAX_POSITION_RATIO * 2 * b * int(lengths.max())


def announce(model: nn.Module, setting: bool | str) -> None:
    """Say once, at start-up, what ``auto`` does with this model (and why it is off, when it is)."""
    if setting != "auto":
        return
    reason = unsupported_reason(model)
    if reason is not None:
        message = f"lit_align: prefix_sharing auto: off ({reason}); every batch runs the unshared chosen+rejected forward"
    else:
        message = (
            "lit_align: prefix_sharing auto: on for batches whose shared rows hold at most "
            f"{AUTO_MAX_POSITION_RATIO:.0%} of the unshared token positions (prompts about as long as the completions or longer)"
        )
    if message not in _announced:
        _announced.add(message)
        rank_zero_info(message)


def choose_layout(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, loss_mask: torch.Tensor, setting: bool | str) -> SharedLayout | None:
    """The shared layout a pairwise batch runs with under ``setting`` (true / false / auto), or None."""
    if setting is False:
        return None
    if setting == "auto":
        # Quiet: announce() said at start-up why auto is off for this model; per batch it just decides.
        longest = int(attention_mask.sum(-1).max()) if attention_mask.numel() else 0
        if unsupported_reason(model, longest) is not None or not pays_off(attention_mask, loss_mask):
            return None
        return share_prefix(input_ids, attention_mask, loss_mask)
    return pair_layout(model, input_ids, attention_mask, loss_mask)
