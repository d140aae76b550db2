"""``PolicyWithReference``: the trainable policy and the frozen reference it is regularised towards.

Algorithms ask this object for log-probs and never learn where the reference comes from. Modes:

* ``copy`` — a frozen deep copy of the initial policy (eval mode, no grads): DPO/IPO/KTO/BOND.
* ``none`` — no reference is built or held in memory (ORPO, SimPO, SFT).
* ``precomputed`` — one no-grad pass over the dataset before training computes the reference
  log-probs of every example (``lit_align.reference_cache``), cached on disk; batches carry them
  (``batch.reference_logps``) and no reference model is held while training.
* ``adapter`` — LoRA adapters (``peft``) are trained on top of the starting weights; the reference
  is the same weights with the adapters switched off, so no second copy exists. The reference is
  the starting model itself: a policy that already carries an (SFT) adapter has it merged first.
"""

from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn
from transformers import PreTrainedModel

from lit_align.head import HEAD_MODES, HeadMode, completion_logps
from lit_align.ops import SequenceLogps
from lit_align.prefix_sharing import SharedLayout, shared_completion_logps

ReferenceMode = Literal["copy", "none", "precomputed", "adapter"]
REFERENCE_MODES = ("copy", "none", "precomputed", "adapter")


@dataclass
class LoraSettings:
    """LoRA adapters for ``reference: adapter`` (Hu et al. 2021, arXiv 2106.09685).

    Args:
        r: Rank of the update ``B A``.
        alpha: Scale ``alpha / r`` of the update.
        dropout: Dropout on the adapter input.
        target_modules: Module names to adapt; ``all-linear`` adapts every linear layer but the head.
    """

    r: int = 16
    alpha: int = 32
    dropout: float = 0.0
    target_modules: list[str] | str = "all-linear"


def _merge_existing_adapters(policy: nn.Module) -> nn.Module:
    # A policy loaded with an SFT adapter must keep it in the reference: the reference is the model
    # the adapter starts from, not the bare base underneath (the silent mismatch to avoid).
    from peft import PeftModel

    if isinstance(policy, PeftModel):
        return policy.merge_and_unload()
    if getattr(policy, "_hf_peft_config_loaded", False):
        raise ValueError(
            "reference='adapter' got a model that already carries a PEFT adapter loaded by transformers; "
            "merge it first (PeftModel.from_pretrained(base, path).merge_and_unload().save_pretrained(out)) "
            "and train from the merged folder, so the reference is that SFT model and not its bare base"
        )
    return policy


def add_lora(policy: PreTrainedModel, settings: LoraSettings) -> nn.Module:
    """``policy`` wrapped as a ``PeftModel`` whose only trainable parameters are the LoRA matrices."""
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError as error:  # pragma: no cover - peft is an optional extra
        raise ImportError("reference='adapter' needs peft: pip install 'lit_align[lora]'") from error
    policy = _merge_existing_adapters(policy)
    config = LoraConfig(r=settings.r, lora_alpha=settings.alpha, lora_dropout=settings.dropout, target_modules=settings.target_modules, task_type="CAUSAL_LM")
    model = get_peft_model(policy, config)
    if getattr(policy, "is_activation_checkpointing", getattr(policy, "is_gradient_checkpointing", False)):
        # Checkpointed blocks with frozen inputs would get no gradient into the adapters.
        model.enable_input_require_grads()
    return model


class PolicyWithReference(nn.Module):
    """The policy and its reference (see module docstring for the modes)."""

    def __init__(self, policy: PreTrainedModel, reference: ReferenceMode = "copy", lora: LoraSettings | None = None, head_mode: HeadMode = "compact") -> None:
        super().__init__()
        if head_mode not in HEAD_MODES:
            raise ValueError(f"unknown head_mode {head_mode!r}; expected one of {', '.join(HEAD_MODES)}")
        if reference not in REFERENCE_MODES:
            raise ValueError(f"unknown reference mode {reference!r}; expected one of {', '.join(REFERENCE_MODES)}")
        if lora is not None and reference != "adapter":
            raise ValueError(f"LoRA settings are only used with reference='adapter' (got reference={reference!r})")
        self.mode = reference
        # compact: the LM head runs only on completion positions, chunked (lit_align.head).
        self.head_mode = head_mode
        # from_pretrained returns models in eval mode and Lightning >= 2.6 keeps module modes as
        # found, so without this the policy would train with dropout silently off.
        policy.train()
        self.policy = add_lora(policy, lora or LoraSettings()) if reference == "adapter" else policy
        self.reference: PreTrainedModel | None = None
        if reference == "copy":
            self.reference = copy.deepcopy(policy)
            self.reference.requires_grad_(False)
            self.reference.eval()

    @property
    def has_reference(self) -> bool:
        return self.mode != "none"

    def train(self, mode: bool = True) -> "PolicyWithReference":
        # Lightning calls .train() on the whole module each epoch; the reference must stay in eval
        # mode (dropout off) or its log-probs would be noisy and the DPO loss at init not log 2.
        super().train(mode)
        if self.reference is not None:
            self.reference.eval()
        return self

    def _logps(self, model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, loss_mask: torch.Tensor, layout: SharedLayout | None) -> SequenceLogps:
        if layout is not None:
            return shared_completion_logps(model, layout, self.head_mode)
        return completion_logps(model, input_ids, attention_mask, loss_mask, self.head_mode)

    def policy_logps(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, loss_mask: torch.Tensor, layout: SharedLayout | None = None) -> SequenceLogps:
        """log pi(y|x) per row; with ``layout`` (``lit_align.prefix_sharing``) from one forward over the shared rows."""
        return self._logps(self.policy, input_ids, attention_mask, loss_mask, layout)

    @contextlib.contextmanager
    def reference_weights(self):
        """The policy module acting as the reference: adapters disabled and dropout off."""
        if self.mode != "adapter":
            raise RuntimeError(f"reference_weights() is for reference='adapter', not {self.mode!r}")
        was_training = self.policy.training
        self.policy.eval()
        try:
            with self.policy.disable_adapter():
                yield self.policy
        finally:
            self.policy.train(was_training)

    @torch.no_grad()
    def reference_logps(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, loss_mask: torch.Tensor, batch: Any = None, layout: SharedLayout | None = None) -> SequenceLogps:
        """log pi_ref(y|x) per row. ``batch`` supplies precomputed values (``batch.reference_logps``);
        ``layout`` runs the live reference on prefix-shared rows, like ``policy_logps``."""
        if self.mode == "none":
            raise RuntimeError("this algorithm runs without a reference model (reference='none'), so no reference log-probs exist")
        if self.mode == "precomputed":
            cached = getattr(batch, "reference_logps", None)
            if cached is None:
                raise RuntimeError(
                    "reference='precomputed' but the batch carries no reference_logps: the precompute pass runs at fit/validate "
                    "start (lit_align.reference_cache.precompute_reference) and its DataModule collate must attach them"
                )
            return SequenceLogps(*(t.to(device=input_ids.device, dtype=torch.float32) for t in cached))
        if self.mode == "adapter":
            with self.reference_weights() as reference:
                return self._logps(reference, input_ids, attention_mask, loss_mask, layout)
        return self._logps(self.reference, input_ids, attention_mask, loss_mask, layout)

    def export_model(self) -> PreTrainedModel:
        """A plain ``PreTrainedModel`` to ``save_pretrained``: LoRA adapters are merged into a copy."""
        if self.mode == "adapter":
            return copy.deepcopy(self.policy).merge_and_unload()
        return self.policy
