"""Prompts for online learning: the DataModule every sampling algorithm reads.

Rows need a ``prompt`` only (default ``embedded:prompts``). The algorithm draws k completions per
prompt from its own models while it trains (``OnlineSampling``), with the settings this
DataModule declares once (``sampling_settings``): k, the generation budget, the temperature and
the base seed of the draws.
"""

from __future__ import annotations

from typing import Any


from lit_align.data.batches import PromptBatch
from lit_align.data.datamodule import AlignmentDataModule, check_text
from lit_align.data.tokenize import DataReport
from lit_align.errors import check_range
from lit_align.online.generation import SamplingSettings


class PromptDataModule(AlignmentDataModule):
    """Prompts only, for methods that sample their own completions (online DPO, RLOO, GRPO, PPO, BOND online).

    Args:
        num_samples: k >= 1, completions drawn per prompt (the group size of group baselines;
            BOND reads it as N, the Best-of-N size of its anchor samples).
        max_new_tokens: Generation budget (>= 1) of every sample the algorithm draws.
        temperature: Sampling temperature > 0; 1 samples the policy itself, which on-policy
            estimators (sampled KL, REINFORCE, the Best-of-N formulas) assume.
        **kwargs: See ``AlignmentDataModule`` (``dataset`` defaults to ``embedded:prompts``; ``seed``
            is also the base seed of the draws).
    """

    embedded_default = "embedded:prompts"
    required_columns: tuple[str, ...] = ("prompt",)

    def __init__(self, num_samples: int = 2, max_new_tokens: int = 24, temperature: float = 1.0, **kwargs: Any) -> None:
        check_range(self, "num_samples", num_samples, 1, integer=True)
        check_range(self, "max_new_tokens", max_new_tokens, 1, integer=True)
        check_range(self, "temperature", temperature, 0.0, low_open=True)
        super().__init__(**kwargs)
        self.num_samples = num_samples
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature

    def encode_row(self, row: dict, where: str, report: DataReport) -> dict | None:
        prompt = row.get("prompt")
        if not check_text(prompt, where, report, "prompt"):
            return None
        return self.encode_example(prompt, {}, report)  # the prompt alone, cut to max_prompt_length

    def collate(self, examples: list[dict]) -> PromptBatch:
        return PromptBatch([ex["prompt_ids"] for ex in examples], [ex["prompt_text"] for ex in examples])

    def sampling_settings(self) -> SamplingSettings:
        """How the algorithm draws from this data's prompts (taken once, in its ``connect`` step)."""
        return SamplingSettings(self.num_samples, self.max_new_tokens, self.temperature, self.seed)
