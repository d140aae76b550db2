"""Supervised (demonstration) data: prompt / completion, or whole chat conversations."""

from __future__ import annotations

from lit_align.data.batches import SequenceBatch
from lit_align.data.collate import sequences_with_mask
from lit_align.data.datamodule import AlignmentDataModule, check_text
from lit_align.data.tokenize import DataError, DataReport, assistant_text, is_messages

PLAIN_TEXT_NOTE = "plain text without a prompt (trained on in full)"


class SFTDataModule(AlignmentDataModule):
    """Rows ``prompt, completion``, or a ``messages`` conversation ending in an assistant turn
    (UltraChat convention; the last assistant turn is the completion), or plain language-model text:
    a ``text`` column alone (or a ``completion`` without ``prompt``) is a completion of an empty
    prompt, trained on in full. Map other names with ``columns``. Default dataset:
    ``embedded:demonstrations``."""

    embedded_default = "embedded:demonstrations"

    def select_rows(self, rows, name: str):
        # Plain language-model data: a lone ``text`` column is the completion of an empty prompt.
        if "text" in rows.column_names and not {"completion", "messages"} & set(rows.column_names) and not {"completion", "messages"} & set(self.columns or {}):
            rows = rows.rename_column("text", "completion")
        return super().select_rows(rows, name)

    def check_columns(self, columns: list[str], source: str) -> None:
        if "completion" not in columns and "messages" not in columns:
            raise DataError(
                f"{source}: needs columns prompt+completion, or messages; available: {columns}. "
                "Map yours with e.g. `columns: {completion: response}` in the data config; plain language-model text "
                "(no prompt) is read from a `text` column, or map it with `columns: {completion: your_column}`."
            )

    def encode_row(self, row: dict, where: str, report: DataReport) -> dict | None:
        if "messages" in row and row.get("completion") is None:
            if not check_text(row["messages"], where, report, "messages"):
                return None
            if not is_messages(row["messages"]):
                raise DataError(f"{where}: field 'messages' must be a list of {{'role', 'content'}} dicts")
            # The prompt is always the conversation before its last assistant turn.
            texts = self.read_texts({"messages": row["messages"]}, ("messages",), where, report)
        elif "completion" not in row:
            raise DataError(f"{where}: needs columns prompt+completion or messages; found {sorted(row)} (map yours with `columns`)")
        elif "prompt" not in row and not is_messages(row["completion"]):
            # Plain text: the whole row is trained on, after the tokenizer's BOS when it adds one.
            if not check_text(row["completion"], where, report, "completion"):
                return None
            report.note(PLAIN_TEXT_NOTE)
            texts = ("", [assistant_text(row["completion"], f"{where}, field 'completion'")])
        else:
            texts = self.read_texts(row, ("completion",), where, report)
        if texts is None:
            return None
        prompt, (completion,) = texts
        return self.encode_example(prompt, {"completion": completion}, report)

    def collate(self, examples: list[dict]) -> SequenceBatch:
        return SequenceBatch(*sequences_with_mask([ex["prompt_ids"] for ex in examples], [ex["completion_ids"] for ex in examples], self.tokenizer.pad_token_id))
