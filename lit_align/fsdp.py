"""FSDP wrapping policy for any Hugging Face model: shard at the model's own decoder-layer class.

Every ``PreTrainedModel`` names the blocks that must not be split across devices in
``_no_split_modules`` (``LlamaDecoderLayer``, ``MistralDecoderLayer``, ``Qwen2DecoderLayer``...).
Those are the right FSDP units: one all-gather per layer, and the same rule serves activation
checkpointing. Use it by import path in a config (see ``configs/trainer/fsdp.yaml``)::

    strategy:
      class_path: lightning.pytorch.strategies.FSDPStrategy
      init_args:
        auto_wrap_policy: lit_align.fsdp.decoder_layers
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import PreTrainedModel

# Class names collected from the models met while wrapping (the traversal visits a model before
# its layers), so one function serves every architecture without naming it.
_NO_SPLIT: set[str] = set()


def decoder_layers(module: nn.Module, recurse: bool, nonwrapped_numel: int = 0) -> bool:
    """torch FSDP auto-wrap policy: descend everywhere; wrap modules of a decoder-layer class.

    Wrapping the frozen reference's layers as well shards it like the policy: no rank holds an
    unsharded copy of either.
    """
    if recurse:
        if isinstance(module, PreTrainedModel):
            _NO_SPLIT.update(module._no_split_modules or ())
        return True
    return type(module).__name__ in _NO_SPLIT


def fsdp_root(module: nn.Module | None) -> nn.Module | None:
    """``module`` if it is a torch FSDP (v1) wrapper, else None."""
    from torch.distributed.fsdp import FullyShardedDataParallel

    return module if isinstance(module, FullyShardedDataParallel) else None


def full_state_dict(root: nn.Module) -> dict[str, torch.Tensor]:
    """The unsharded state dict of an FSDP-wrapped ``root``, gathered on rank 0 (CPU); empty on other ranks.

    A collective: every rank must call it. Keys are the unwrapped module's own names.
    """
    from torch.distributed.fsdp import FullStateDictConfig, FullyShardedDataParallel, StateDictType

    # offload_to_cpu on parameters already on the CPU crashes the process (SIGSEGV, torch 2.13 gloo).
    offload = next(root.parameters()).device.type != "cpu"
    with FullyShardedDataParallel.state_dict_type(root, StateDictType.FULL_STATE_DICT, FullStateDictConfig(offload_to_cpu=offload, rank0_only=True)):
        return root.state_dict()
