"""LoRA adapters for ``reference: adapter`` (Hu et al. 2021, arXiv 2106.09685): the policy trains
low-rank updates on top of its starting weights, and the reference is the same weights with the
adapters switched off (``lit_align.reference_modes.AdapterReference``)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn
from transformers import PreTrainedModel


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
