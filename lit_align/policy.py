"""``PolicyWithReference``: the trainable policy and the frozen reference it is regularised towards.

Algorithms ask this object for log-probs and never learn where the reference comes from. Each mode
is one strategy object (``lit_align.reference_modes``):

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
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedModel

from lit_align.head import HEAD_MODES, HeadMode, completion_logps
from lit_align.lora import LoraSettings, add_lora
from lit_align.ops import SequenceLogps
from lit_align.prefix_sharing import SharedLayout, shared_completion_logps
from lit_align.reference_modes import BUILTIN_REFERENCE_MODES, Reference, ReferenceMode, ReferenceSetup, make_reference

# The built-in modes; the live registry (plug-ins included) is lit_align.reference_modes.REFERENCES.
REFERENCE_MODES = BUILTIN_REFERENCE_MODES

__all__ = ["PolicyWithReference", "LoraSettings", "add_lora", "ReferenceMode", "REFERENCE_MODES", "ReferenceSetup"]


class PolicyWithReference(nn.Module):
    """The policy and its reference (see module docstring for the modes).

    Attributes:
        policy: The trainable model (a ``PeftModel`` with ``reference='adapter'``).
        reference: The frozen copy with ``reference='copy'``; None otherwise.
        strategy: The mode's ``lit_align.reference_modes.Reference`` object.
    """

    def __init__(self, policy: PreTrainedModel, reference: ReferenceMode = "copy", lora: LoraSettings | None = None, head_mode: HeadMode = "compact") -> None:
        super().__init__()
        if head_mode not in HEAD_MODES:
            raise ValueError(f"unknown head_mode {head_mode!r}; expected one of {', '.join(HEAD_MODES)}")
        self.strategy: Reference = make_reference(reference, lora)
        # compact: the LM head runs only on completion positions, chunked (lit_align.head).
        self.head_mode = head_mode
        # from_pretrained returns models in eval mode and Lightning >= 2.6 keeps module modes as
        # found, so without this the policy would train with dropout silently off.
        policy.train()
        self.policy = self.strategy.wrap_policy(policy)
        self.reference: nn.Module | None = self.strategy.build(policy)

    @property
    def has_reference(self) -> bool:
        """Whether reference log-probs exist (every mode but ``none``)."""
        return self.strategy.name != "none"

    @property
    def has_reference_model(self) -> bool:
        """Whether a module can act as the reference (``copy``, ``adapter``): see ``reference_model``."""
        return self.strategy.holds_model

    def train(self, mode: bool = True) -> "PolicyWithReference":
        # Lightning calls .train() on the whole module each epoch; the reference must stay in eval
        # mode (dropout off) or its log-probs would be noisy and the DPO loss at init not log 2.
        super().train(mode)
        if self.reference is not None:
            self.reference.eval()
        return self

    def logps_of(self, model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, loss_mask: torch.Tensor, layout: SharedLayout | None = None) -> SequenceLogps:
        """log-probs of ``model`` (the policy, or a module acting as the reference) with this pair's head mode."""
        if layout is not None:
            return shared_completion_logps(model, layout, self.head_mode)
        return completion_logps(model, input_ids, attention_mask, loss_mask, self.head_mode)

    def policy_logps(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, loss_mask: torch.Tensor, layout: SharedLayout | None = None) -> SequenceLogps:
        """log pi(y|x) per row; with ``layout`` (``lit_align.prefix_sharing``) from one forward over the shared rows."""
        return self.logps_of(self.policy, input_ids, attention_mask, loss_mask, layout)

    @torch.no_grad()
    def reference_logps(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, loss_mask: torch.Tensor, batch: Any = None, layout: SharedLayout | None = None) -> SequenceLogps:
        """log pi_ref(y|x) per row. Pass the ``batch`` the rows come from (``precomputed`` reads its
        ``reference_logps``); ``layout`` runs a live reference on prefix-shared rows, like ``policy_logps``."""
        return self.strategy.logps(self, (input_ids, attention_mask, loss_mask), batch, layout)

    def reference_model(self) -> contextlib.AbstractContextManager[nn.Module]:
        """Context yielding the module acting as the reference, for sampling and KL: the frozen copy,
        or the policy with its adapters off (eval mode, restored on exit). ``none`` and
        ``precomputed`` hold no model and raise ``ConfigError``. Does not enter ``no_grad``."""
        return self.strategy.model(self)

    def prepare(self, setup: ReferenceSetup, datamodule: Any) -> None:
        """The mode's set-up pass before fit/validate (``precomputed``: attach cached log-probs to the data)."""
        self.strategy.prepare(self, setup, datamodule)

    def checkpoint_left_out(self, state_dict: dict[str, Any], prefix: str) -> list[str]:
        """Keys of ``state_dict`` (this module's under ``prefix``) that the mode rebuilds on load."""
        prefixes = tuple(prefix + p for p in self.strategy.checkpoint_prefixes())
        return [k for k in state_dict if prefixes and k.startswith(prefixes)]

    def export_model(self, policy: nn.Module | None = None) -> PreTrainedModel:
        """A plain ``PreTrainedModel`` to ``save_pretrained`` (LoRA adapters merged into a copy);
        ``policy``: another model of this one's structure to export instead (e.g. rebuilt from FSDP shards)."""
        return self.strategy.exported(self.policy if policy is None else policy)
