"""Best-of-N data for BOND: prompts with N scored reference completions, offline or sampled online.

* **offline** — rows ``prompt, completions, rewards``: N completions of the reference policy per
  prompt and their rewards (e.g. written once by ``build_best_of_n_rows``);
* **online** — rows ``prompt`` only (default ``embedded:prompts``); every step the algorithm asks
  ``complete`` for N samples from its reference/anchor (KV-cache ``generate``) scored by its reward.
  This is what iterative BOND and J-BOND need, since their anchor moves during training.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
from datasets import Dataset
from transformers import PreTrainedModel

from lit_align.data.batches import BestOfNBatch
from lit_align.data.datamodule import AlignmentDataModule, check_text
from lit_align.data.tokenize import DataError, DataReport, assistant_text
from lit_align.errors import check_range
from lit_align.generation import sample_completions
from lit_align.rewards.base import RewardFunction

BestOfNMode = Literal["auto", "online", "offline"]


def score_completions(tokenizer, reward: RewardFunction, prompt_texts: list[str], completion_ids: list[list[list[int]]]) -> torch.Tensor:
    """Rewards [B, K] of K completions (token ids) per prompt, decoded without special tokens."""
    k = len(completion_ids[0]) if completion_ids else 0
    texts = [tokenizer.decode(c, skip_special_tokens=True).strip() for per_prompt in completion_ids for c in per_prompt]
    prompts = [p for p in prompt_texts for _ in range(k)]
    return reward(prompts, texts).to(torch.float32).view(len(prompt_texts), k)


def build_best_of_n_rows(model: PreTrainedModel, tokenizer, prompts: list[str], reward: RewardFunction, num_samples: int, max_new_tokens: int = 24, seed: int = 0) -> Dataset:
    """An offline Best-of-N dataset: ``num_samples`` completions of ``model`` per prompt and their rewards.

    Save it with ``save_to_disk`` or ``to_json`` and point ``BestOfNDataModule(dataset=...)`` at it.
    """
    prompt_ids = [tokenizer(p, add_special_tokens=True)["input_ids"] for p in prompts]
    samples = sample_completions(model, tokenizer, prompt_ids, num_samples, max_new_tokens, seed=seed)
    rewards = score_completions(tokenizer, reward, prompts, samples)
    texts = [[tokenizer.decode(c, skip_special_tokens=True).strip() for c in per_prompt] for per_prompt in samples]
    return Dataset.from_list([{"prompt": p, "completions": t, "rewards": r} for p, t, r in zip(prompts, texts, rewards.tolist())])


class BestOfNDataModule(AlignmentDataModule):
    """Prompts with N reference completions and rewards, for BOND / J-BOND.

    Args:
        mode: ``offline`` reads ``completions``/``rewards`` columns; ``online`` reads prompts only and
            samples in training; ``auto`` picks offline when the data has a ``completions`` column.
        num_samples: N >= 2, the completions per prompt: sampled online, or the first N of each
            offline row (rows with fewer are dropped and counted). J-BOND needs exactly 2.
        max_new_tokens: Generation budget (>= 1) of online reference samples (and of the policy
            samples the algorithm draws, so both sides see the same length limit).
        temperature: Sampling temperature > 0; 1 draws from the reference itself, which the
            Best-of-N formulas assume.
        **kwargs: See ``AlignmentDataModule`` (``dataset`` defaults to ``embedded:prompts``).
    """

    embedded_default = "embedded:prompts"

    def __init__(self, mode: BestOfNMode = "auto", num_samples: int = 4, max_new_tokens: int = 24, temperature: float = 1.0, **kwargs: Any) -> None:
        # Best-of-1 is the reference itself: nothing to distil, and the quantile terms vanish.
        check_range(self, "num_samples", num_samples, 2, integer=True)
        check_range(self, "max_new_tokens", max_new_tokens, 1, integer=True)
        check_range(self, "temperature", temperature, 0.0, low_open=True)
        super().__init__(**kwargs)
        self.mode = mode
        self.num_samples = num_samples
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self.resolved_mode: str | None = None

    @property
    def required_columns(self) -> tuple[str, ...]:
        return ("prompt", "completions", "rewards") if self.resolved_mode == "offline" else ("prompt",)

    def _encode(self, rows: Dataset, name: str) -> list[dict]:
        if self.resolved_mode is None:
            has_completions = "completions" in rows.column_names or "completions" in (self.columns or {})
            self.resolved_mode = self.mode if self.mode != "auto" else ("offline" if has_completions else "online")
        return super()._encode(rows, name)

    @property
    def online(self) -> bool:
        return self.resolved_mode == "online"

    def encode_row(self, row: dict, where: str, report: DataReport) -> dict | None:
        prompt = row.get("prompt")
        if not check_text(prompt, where, report, "prompt"):
            return None
        prompt_ids = self.encoder.encode_prompt(prompt)
        example = {"prompt_ids": prompt_ids, "prompt_text": self.encoder.render_prompt(prompt)}
        if self.online:
            truncated = self.encoder.truncate(prompt_ids, [[0]], report)  # the prompt cut only
            return None if truncated is None else {**example, "prompt_ids": truncated[0]}
        completions, rewards = row.get("completions"), row.get("rewards")
        if not isinstance(completions, list) or not isinstance(rewards, list):
            raise DataError(f"{where}: 'completions' and 'rewards' must be lists (N completions and their N rewards), got {type(completions).__name__} and {type(rewards).__name__}")
        if len(completions) != len(rewards):
            raise DataError(f"{where}: {len(completions)} completions but {len(rewards)} rewards; each completion needs exactly one reward")
        if len(completions) < self.num_samples:
            report.drop(f"fewer than num_samples={self.num_samples} completions")
            return None
        completions, rewards = completions[: self.num_samples], rewards[: self.num_samples]
        if any(c is None for c in completions) or any(r is None or (isinstance(r, float) and math.isnan(r)) for r in rewards):
            report.drop("missing completion or reward")
            return None
        if not all(isinstance(r, (int, float)) for r in rewards):
            raise DataError(f"{where}: field 'rewards' must hold numbers, got {rewards!r:.80}")
        # An empty completion is a legitimate sample of the reference (immediate EOS): keep it, or the
        # N samples would no longer be draws from pi_ref and the quantiles would be biased.
        encoded = [self.encoder.encode_completion(prompt, assistant_text(c, f"{where}, field 'completions'")) for c in completions]
        truncated = self.encoder.truncate(prompt_ids, encoded, report)
        if truncated is None:
            return None
        return {**example, "prompt_ids": truncated[0], "completion_ids": truncated[1], "rewards": [float(r) for r in rewards]}

    def collate(self, examples: list[dict]) -> BestOfNBatch:
        batch = BestOfNBatch([ex["prompt_ids"] for ex in examples], [ex["prompt_text"] for ex in examples])
        if not self.online:
            batch.completion_ids = [ex["completion_ids"] for ex in examples]
            batch.rewards = torch.tensor([ex["rewards"] for ex in examples], dtype=torch.float32)
        return batch

    def complete(self, batch: BestOfNBatch, model: PreTrainedModel, reward: RewardFunction, seed: int | None = None, num_samples: int | None = None) -> BestOfNBatch:
        """Fill an online batch with ``num_samples`` (default N) samples of ``model`` per prompt, scored by
        ``reward``. Same ``seed``, same model: same completions (the caller's RNG is left untouched)."""
        n = self.num_samples if num_samples is None else num_samples
        samples = self.sample(model, batch.prompt_ids, n, seed)
        rewards = score_completions(self.tokenizer, reward, batch.prompt_texts, samples)
        device = batch.rewards.device if batch.rewards is not None else next(model.parameters()).device
        return BestOfNBatch(batch.prompt_ids, batch.prompt_texts, samples, rewards.to(device))

    def sample(self, model: PreTrainedModel, prompt_ids: list[list[int]], num_samples: int, seed: int | None = None) -> list[list[list[int]]]:
        """``num_samples`` completions per prompt with this DataModule's length and temperature settings."""
        return sample_completions(model, self.tokenizer, prompt_ids, num_samples, self.max_new_tokens, self.temperature, seed=seed)
