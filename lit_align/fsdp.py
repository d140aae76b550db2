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
