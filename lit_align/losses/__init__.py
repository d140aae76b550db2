"""Pure loss functions: per-sequence log-probs in, unreduced tensors out. No Lightning, no config."""

from lit_align.losses.dpo import DPOOutput, dpo_loss
from lit_align.losses.ipo import ipo_loss
from lit_align.losses.sft import sft_loss

__all__ = ["DPOOutput", "dpo_loss", "ipo_loss", "sft_loss"]
