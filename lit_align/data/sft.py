"""Supervised (demonstration) data: prompt / completion, or whole chat conversations."""

from __future__ import annotations

from lit_align.data.batches import SequenceBatch
from lit_align.data.collate import sequences_with_mask
from lit_align.data.datamodule import AlignmentDataModule, check_text
from lit_align.data.tokenize import DataError, DataReport, assistant_text, is_messages, split_conversation


class SFTDataModule(AlignmentDataModule):
    """Rows ``prompt, completion``, or a ``messages`` conversation ending in an assistant turn
    (UltraChat convention; the last assistant turn is the completion). Map other names with
    ``columns``. Default dataset: ``embedded:demonstrations``."""

    embedded_default = "embedded:demonstrations"

    def check_columns(self, columns: list[str], source: str) -> None:
        if "completion" not in columns and "messages" not in columns:
            raise DataError(
                f"{source}: needs columns prompt+completion, or messages; available: {columns}. "
                "Map yours with e.g. `columns: {completion: response}` in the data config."
            )
        if "completion" in columns and "prompt" not in columns:
            raise DataError(f"{source}: has a completion column but no prompt column; available: {columns}. Map it with `columns: {{prompt: your_column}}`.")

    def encode_row(self, row: dict, where: str, report: DataReport) -> dict | None:
        if "messages" in row and row.get("completion") is None:
            if not check_text(row["messages"], where, report, "messages"):
                return None
            if not is_messages(row["messages"]):
                raise DataError(f"{where}: field 'messages' must be a list of {{'role', 'content'}} dicts")
            prompt, completion = split_conversation(row["messages"], f"{where}, field 'messages'")
        else:
            if "completion" not in row:
                raise DataError(f"{where}: needs columns prompt+completion or messages; found {sorted(row)} (map yours with `columns`)")
            prompt, completion = row.get("prompt"), row.get("completion")
            if not (check_text(prompt, where, report, "prompt") and check_text(completion, where, report, "completion")):
                return None
            completion = assistant_text(completion, f"{where}, field 'completion'")
        prompt_ids = self.encoder.encode_prompt(prompt)
        truncated = self.encoder.truncate(prompt_ids, [self.encoder.encode_completion(prompt, completion)], report)
        if truncated is None:
            return None
        prompt_ids, (completion_ids,) = truncated
        return {"prompt_ids": prompt_ids, "completion_ids": completion_ids, "prompt_text": self.encoder.render_prompt(prompt)}

    def collate(self, examples: list[dict]) -> SequenceBatch:
        return SequenceBatch(*sequences_with_mask([ex["prompt_ids"] for ex in examples], [ex["completion_ids"] for ex in examples], self.tokenizer.pad_token_id))
