"""The reward-function interface used by evaluation, AI-feedback labelling and BOND."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

import torch


class RewardFunction(ABC):
    """Scores completions: ``reward(prompts, completions) -> Tensor[len(prompts)]`` (float32, CPU).

    Prompts and completions are decoded text (chat prompts rendered with the tokenizer's template).
    Subclass this and name it by ``class_path`` in a YAML to plug in your own reward.
    """

    @abstractmethod
    def __call__(self, prompts: Sequence[str], completions: Sequence[str]) -> torch.Tensor: ...
