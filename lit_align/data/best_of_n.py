"""Best-of-N data for BOND: prompts with N scored reference completions, offline or sampled online.

* **offline** — rows ``prompt, completions, rewards``: N completions of the reference policy per
  prompt and their rewards (e.g. written once by ``build_best_of_n_rows``);
* **online** — rows ``prompt`` only (default ``embedded:prompts``); every step the algorithm draws
  N samples from its reference/anchor (KV-cache ``generate``) and scores them with its reward
  (``lit_align.online.sampling``), with the settings this DataModule declares
  (``sampling_settings``). Iterative BOND and J-BOND need this, since their anchor moves. This
  mode is ``lit_align.online.PromptDataModule``, which this class extends with the offline rows.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
from datasets import Dataset
from transformers import PreTrainedModel

from lit_align.data.batches import BestOfNBatch
from lit_align.data.datamodule import check_text
from lit_align.data.tokenize import DataError, DataReport, assistant_text
from lit_align.errors import check_range
from lit_align.online.generation import sample_completions
from lit_align.online.prompts import PromptDataModule
from lit_align.rewards.base import RewardFunction
from lit_align.online.scoring import decode_completions, score_texts

BestOfNMode = Literal["auto", "online", "offline"]


def build_best_of_n_rows(model: PreTrainedModel, tokenizer, prompts: list[str], reward: RewardFunction, num_samples: int, max_new_tokens: int = 24, seed: int = 0) -> Dataset:
    """An offline Best-of-N dataset: ``num_samples`` completions of ``model`` per prompt and their rewards.

    Save it with ``save_to_disk`` or ``to_json`` and point ``BestOfNDataModule(dataset=...)`` at it.
    """
    prompt_ids = [tokenizer(p, add_special_tokens=True)["input_ids"] for p in prompts]
    samples = sample_completions(model, tokenizer, prompt_ids, num_samples, max_new_tokens, seed=seed)
    texts = decode_completions(tokenizer, samples)
    rewards = score_texts(reward, prompts, texts)
    return Dataset.from_list([{"prompt": p, "completions": t, "rewards": r} for p, t, r in zip(prompts, texts, rewards.tolist())])


class BestOfNDataModule(PromptDataModule):
    """Prompts with N reference completions and rewards, for BOND / J-BOND.

    Args:
        mode: ``offline`` reads ``completions``/``rewards`` columns; ``online`` reads prompts only and
            samples in training (as ``PromptDataModule``); ``auto`` picks offline when the data has
            a ``completions`` column.
        num_samples: N >= 2, the completions per prompt: sampled online, or the first N of each
            offline row (rows with fewer are dropped and counted). J-BOND needs exactly 2. Offline,
            ``sampling_settings`` tells the algorithm what its own samples should match.
        max_new_tokens: Generation budget (>= 1) of online reference samples and of the policy
            samples the algorithm draws, so both sides see the same length limit. This and
            ``temperature`` reach the algorithm through ``sampling_settings`` (its ``connect`` step).
        temperature: Sampling temperature > 0; 1 draws from the reference itself, which the
            Best-of-N formulas assume.
        **kwargs: See ``AlignmentDataModule`` (``dataset`` defaults to ``embedded:prompts``).
    """

    def __init__(self, mode: BestOfNMode = "auto", num_samples: int = 4, max_new_tokens: int = 24, temperature: float = 1.0, **kwargs: Any) -> None:
        # Best-of-1 is the reference itself: nothing to distil, and the quantile terms vanish.
        check_range(self, "num_samples", num_samples, 2, integer=True)
        super().__init__(num_samples=num_samples, max_new_tokens=max_new_tokens, temperature=temperature, **kwargs)
        self.mode = mode
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
        if self.online:
            return super().encode_row(row, where, report)
        prompt = row.get("prompt")
        if not check_text(prompt, where, report, "prompt"):
            return None
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
        texts = [assistant_text(c, f"{where}, field 'completions'") for c in completions]
        return self.encode_example(prompt, {"completion": texts}, report, rewards=[float(r) for r in rewards])

    def collate(self, examples: list[dict]) -> BestOfNBatch:
        batch = BestOfNBatch([ex["prompt_ids"] for ex in examples], [ex["prompt_text"] for ex in examples])
        if not self.online:
            batch.completion_ids = [ex["completion_ids"] for ex in examples]
            batch.rewards = torch.tensor([ex["rewards"] for ex in examples], dtype=torch.float32)
        return batch
