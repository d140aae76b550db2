"""Rows to encoded examples, one path for every DataModule: check text -> prompt -> completions ->
encode -> truncate -> count.

``RowEncoding`` is the encoding half of ``AlignmentDataModule``. A subclass writes ``encode_row``
with two helpers and says only what differs:

* ``read_texts(row, fields, ...)``: the completion fields and the prompt checked (missing/empty
  values dropped and counted), the prompt taken from its column or split off a whole conversation
  (TRL's convention), every completion as text;
* ``encode_example(prompt, completions, report, **extra)``: token ids with the truncation policy of
  ``PromptCompletionEncoder``, as ``{prompt_ids, prompt_text, <name>_ids..., **extra}``.

``_encode`` runs ``encode_row`` over a split, builds its ``DataReport`` and turns the errors a
row can raise into messages naming the dataset, split and row.
"""

from __future__ import annotations

from collections.abc import Sequence

from datasets import Dataset
from jinja2 import TemplateError
from lightning.pytorch.utilities import rank_zero_info

from lit_align.data.formats import CHAT_PROMPT_NOTE, DIALOGUE_NOTE, chat_prompt, split_dialogue, template_failed, uses_chat_completions
from lit_align.data.sources import select_columns
from lit_align.data.turns import fit_prompt_turns
from lit_align.data.tokenize import DataError, DataReport, Messages, MissingChatTemplate, assistant_text, check_text, is_messages, split_conversation


class RowEncoding:
    """Encoding half of ``AlignmentDataModule`` (uses its ``dataset``, ``columns``, ``encoder``, ``reports``)."""

    required_columns: tuple[str, ...] = ()

    def encode_row(self, row: dict, where: str, report: DataReport) -> dict | None:
        """One row as an encoded example, or None when it is dropped (counted in ``report``)."""
        raise NotImplementedError

    def read_texts(self, row: dict, fields: Sequence[str], where: str, report: DataReport, prompt: str | Messages | None = None) -> tuple[str | Messages, list[str]] | None:
        """(prompt, completion texts) of ``row``, or None when a value is missing or empty (counted).

        The completion ``fields`` are checked first, then the prompt: ``prompt`` if given, else the
        row's ``prompt`` column, else everything before the last assistant turn of the first field
        when it holds a whole conversation (chat messages, or one HH-style "\\n\\nAssistant:" dialogue
        when it is the only field). A completion given as messages is its last assistant turn.
        """
        if not all(check_text(row.get(name), where, report, name) for name in fields):
            return None
        prompt = row.get("prompt") if prompt is None else prompt
        if prompt is None and is_messages(row[fields[0]]):
            prompt, _ = split_conversation(row[fields[0]], f"{where}, field {fields[0]!r}")
        elif prompt is None and len(fields) == 1 and isinstance(row[fields[0]], str) and (dialogue := split_dialogue(row[fields[0]])):
            prompt, row = dialogue[0], {**row, fields[0]: dialogue[1]}
            report.note(DIALOGUE_NOTE)
        if not check_text(prompt, where, report, "prompt"):
            return None
        if isinstance(prompt, str) and self.encoder.chat_template != "never" and uses_chat_completions(row, fields):
            # A string prompt beside message completions (UltraFeedback-binarized) is rendered through
            # the template with them: the model is prompted in the format it answers in.
            prompt = chat_prompt(prompt, next(row[name] for name in fields if is_messages(row[name])))
            report.note(CHAT_PROMPT_NOTE)
        texts = [assistant_text(row[name], f"{where}, field {name!r}") for name in fields]
        if not all(text.strip() for text in texts):
            report.drop("empty completion")
            return None
        return prompt, texts

    def encode_example(self, prompt: str | Messages, completions: dict[str, str | list[str]], report: DataReport, **extra) -> dict | None:
        """Encode ``prompt`` and ``completions`` (name -> text, or a list of texts) and truncate them
        together: ``{prompt_ids, prompt_text, <name>_ids, **extra}``, or None when truncation leaves
        a completion empty (counted). A multi-turn prompt too long for ``max_prompt_length`` first
        loses whole turns (``lit_align.data.turns``). No completions: the prompt alone, cut to
        ``max_prompt_length``."""
        encoder = self.encoder
        prompt_ids = encoder.encode_prompt(prompt)
        if len(prompt_ids) > encoder.max_prompt_length:
            prompt = fit_prompt_turns(prompt, lambda p: len(encoder.encode_prompt(p)), encoder.max_prompt_length, report)
            prompt_ids = encoder.encode_prompt(prompt)
        flat = [(name, text) for name, value in completions.items() for text in ([value] if isinstance(value, str) else value)]
        truncated = encoder.truncate(prompt_ids, [encoder.encode_completion(prompt, text) for _, text in flat], report)
        if truncated is None:
            return None
        prompt_ids, ids = truncated
        example = {"prompt_ids": prompt_ids, "prompt_text": encoder.render_prompt(prompt)}
        for name, value in completions.items():
            if isinstance(value, str):
                example[f"{name}_ids"] = ids.pop(0)
            else:
                example[f"{name}_ids"], ids = ids[: len(value)], ids[len(value) :]
        return {**example, **extra}

    def example_length(self, example: dict) -> int:
        """Length of the longest row the example becomes: prompt + its longest completion."""
        lengths = [len(c) for k, v in example.items() if k.endswith("_ids") and k != "prompt_ids" for c in (v if v and isinstance(v[0], list) else [v])]
        return len(example["prompt_ids"]) + max(lengths, default=0)

    def select_rows(self, rows: Dataset, name: str) -> Dataset:
        """Map the user's columns onto ours and check the required ones. A subclass that reshapes
        rows before encoding (e.g. unpairing preference pairs for KTO) overrides this."""
        return select_columns(rows, self.required_columns, self.columns, f"{self.dataset} ({name})")

    def check_columns(self, columns: list[str], source: str) -> None:
        """Dataset-level column check beyond ``required_columns`` (e.g. alternatives); raises DataError."""

    def _encode(self, rows: Dataset, name: str) -> list[dict]:
        source = f"{self.dataset} ({name})"
        rows = self.select_rows(rows, name)
        self.check_columns(rows.column_names, source)
        report = DataReport(name=f"{self.dataset} [{name}]", total=len(rows))
        examples, index = [], -1
        try:
            for index, row in enumerate(rows):
                example = self.encode_row(row, f"{self.dataset} [{name}] row {index}", report)
                if example is not None:
                    examples.append(example)
        except MissingChatTemplate as error:
            raise MissingChatTemplate(f"{self.dataset} [{name}] row {index}: {error}") from None
        except TemplateError as error:  # the template's own raise_exception (e.g. Mistral's on a system turn)
            raise template_failed(f"{self.dataset} [{name}] row {index}", rows[index], error, self.model) from None
        except UnicodeDecodeError as error:  # Arrow decodes strings lazily, row by row
            raise DataError(f"{self.dataset} [{name}] row {index + 1}: text is not valid UTF-8 ({error}); re-encode the file as UTF-8 (e.g. `iconv -f latin1 -t utf-8`)") from error
        report.kept = len(examples)
        self.reports[name] = report
        rank_zero_info(f"lit_align: {report.summary()}")
        if not examples:
            raise DataError(
                f"{self.dataset} [{name}]: no usable examples left ({report.summary()}). Check the column mapping (`columns`), "
                "that prompts/completions are non-empty, and that max_length/max_prompt_length leave room for a completion."
            )
        return examples
