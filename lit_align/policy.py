"""``PolicyWithReference``: the trainable policy and the frozen reference it is regularised towards.

Algorithms ask this object for log-probs and never learn where the reference comes from. Modes:

* ``copy`` — a frozen deep copy of the initial policy (eval mode, no grads): DPO/IPO/KTO/BOND.
* ``none`` — no reference is built or held in memory (ORPO, SimPO, SFT).
"""

from __future__ import annotations

import copy
from typing import Literal

import torch
from torch import nn
from transformers import PreTrainedModel

from lit_align.ops import SequenceLogps, sequence_logps

ReferenceMode = Literal["copy", "none"]


class PolicyWithReference(nn.Module):
    def __init__(self, policy: PreTrainedModel, reference: ReferenceMode = "copy") -> None:
        super().__init__()
        if reference not in ("copy", "none"):
            raise ValueError(f"unknown reference mode {reference!r}; expected 'copy' or 'none'")
        self.mode = reference
        self.policy = policy
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

    def logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.policy(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits

    def policy_logps(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, loss_mask: torch.Tensor) -> SequenceLogps:
        return sequence_logps(self.logits(input_ids, attention_mask), input_ids, loss_mask)

    @torch.no_grad()
    def reference_logps(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, loss_mask: torch.Tensor) -> SequenceLogps:
        if self.reference is None:
            raise RuntimeError("this algorithm runs without a reference model (reference='none'), so no reference log-probs exist")
        logits = self.reference(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits
        return sequence_logps(logits, input_ids, loss_mask)
