"""Pairwise preference data: prompt / chosen / rejected (plain strings or chat messages)."""

from __future__ import annotations

from lit_align.data.batches import PairwiseBatch
from lit_align.data.collate import sequences_with_mask
from lit_align.data.datamodule import AlignmentDataModule
from lit_align.data.formats import with_implicit_prompt
from lit_align.data.tokenize import DataReport
from lit_align.reference_cache import collate_reference_logps


class PairwiseDataModule(AlignmentDataModule):
    """Rows ``prompt, chosen, rejected``. With chat data, ``chosen``/``rejected`` may hold whole
    conversations (TRL/UltraFeedback convention) and ``prompt`` may be omitted: the prompt is then
    everything before the last assistant turn. String ``chosen``/``rejected`` without a ``prompt``
    (Anthropic HH-RLHF) have the prompt split off their shared beginning
    (``lit_align.data.formats``). Default dataset: ``embedded:pairs``."""

    required_columns = ("chosen", "rejected")
    embedded_default = "embedded:pairs"

    def encode_row(self, row: dict, where: str, report: DataReport) -> dict | None:
        row = with_implicit_prompt(row, report)
        if row is None:
            return None
        texts = self.read_texts(row, ("chosen", "rejected"), where, report)
        if texts is None:
            return None
        prompt, (chosen, rejected) = texts
        if chosen == rejected:
            # Identical sides carry no preference signal and give h = 0 forever.
            report.drop("chosen identical to rejected")
            return None
        example = self.encode_example(prompt, {"chosen": chosen, "rejected": rejected}, report)
        if example is not None and example["chosen_ids"] == example["rejected_ids"]:
            # Different texts that share their first max_length - |prompt| tokens: after the cut the
            # two sides are the same tokens, so again no preference signal (checked after truncation).
            report.drop("chosen identical to rejected after truncation")
            return None
        return example

    def collate(self, examples: list[dict]) -> PairwiseBatch:
        prompts = [ex["prompt_ids"] for ex in examples] * 2
        completions = [ex["chosen_ids"] for ex in examples] + [ex["rejected_ids"] for ex in examples]
        return PairwiseBatch(*sequences_with_mask(prompts, completions, self.tokenizer.pad_token_id), reference_logps=collate_reference_logps(examples))
