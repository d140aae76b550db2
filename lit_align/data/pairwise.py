"""Pairwise preference data: prompt / chosen / rejected (plain strings or chat messages)."""

from __future__ import annotations

from lit_align.data.batches import PairwiseBatch
from lit_align.data.collate import sequences_with_mask
from lit_align.data.datamodule import AlignmentDataModule, check_text
from lit_align.data.tokenize import DataReport, assistant_text, is_messages, split_conversation
from lit_align.reference_cache import collate_reference_logps


class PairwiseDataModule(AlignmentDataModule):
    """Rows ``prompt, chosen, rejected``. With chat data, ``chosen``/``rejected`` may hold whole
    conversations (TRL/UltraFeedback convention) and ``prompt`` may be omitted: the prompt is then
    everything before the last assistant turn. Default dataset: ``embedded:pairs``."""

    required_columns = ("chosen", "rejected")
    embedded_default = "embedded:pairs"

    def encode_row(self, row: dict, where: str, report: DataReport) -> dict | None:
        if not all(check_text(row.get(f), where, report, f) for f in ("chosen", "rejected")):
            return None
        prompt = row.get("prompt")
        if prompt is None and is_messages(row["chosen"]):
            prompt, _ = split_conversation(row["chosen"], f"{where}, field 'chosen'")
        if not check_text(prompt, where, report, "prompt"):
            return None
        chosen = assistant_text(row["chosen"], f"{where}, field 'chosen'")
        rejected = assistant_text(row["rejected"], f"{where}, field 'rejected'")
        if not chosen.strip() or not rejected.strip():
            report.drop("empty completion")
            return None
        if chosen == rejected:
            # Identical sides carry no preference signal and give h = 0 forever.
            report.drop("chosen identical to rejected")
            return None
        prompt_ids = self.encoder.encode_prompt(prompt)
        completions = [self.encoder.encode_completion(prompt, text) for text in (chosen, rejected)]
        truncated = self.encoder.truncate(prompt_ids, completions, report)
        if truncated is None:
            return None
        prompt_ids, (chosen_ids, rejected_ids) = truncated
        return {"prompt_ids": prompt_ids, "chosen_ids": chosen_ids, "rejected_ids": rejected_ids, "prompt_text": self.encoder.render_prompt(prompt)}

    def collate(self, examples: list[dict]) -> PairwiseBatch:
        prompts = [ex["prompt_ids"] for ex in examples] * 2
        completions = [ex["chosen_ids"] for ex in examples] + [ex["rejected_ids"] for ex in examples]
        return PairwiseBatch(*sequences_with_mask(prompts, completions, self.tokenizer.pad_token_id), reference_logps=collate_reference_logps(examples))
