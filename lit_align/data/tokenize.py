"""Turning prompt/completion text or chat messages into token ids, with one truncation policy.

* Chat templates are applied once, by rendering to text and encoding with
  ``add_special_tokens=False``: a template that writes BOS itself never gets a second one.
* Plain-string prompts start with exactly one BOS when the tokenizer adds one itself (Llama, Gemma,
  the embedded tokenizer), and with none when it does not (GPT-2, whose BOS is its EOS; Qwen2, which
  has none): training sees a prompt as ``tokenizer(prompt)`` gives it at inference. Every completion
  ends in exactly one EOS.
* Message lists need a chat template. A tokenizer without one (GPT-2-style checkpoints) is a
  configuration error naming the three fixes, raised at the first chat row: give the tokenizer a
  template, pass one as a Jinja string in ``chat_template``, or ``chat_template: never`` to join
  the turns' contents as plain text. Never a silent fallback: a model trained on one rendering and
  prompted with another underperforms without any visible error.
* Truncation: the prompt is cut from the left to ``max_prompt_length`` (the end of a prompt is what
  the completion answers; a multi-turn prompt first loses whole turns, ``lit_align.data.turns``),
  then completions from the right to fit ``max_length``. A completion left
  empty is dropped, never trained on; every cut and drop is counted in a :class:`DataReport`.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal

from transformers import PreTrainedTokenizerBase

from lit_align.errors import ConfigError, DataError, check_range  # noqa: F401  (DataError re-exported: data modules import it from here)

Messages = list[dict[str, str]]
ChatTemplateMode = Literal["auto", "always", "never"]
CHAT_TEMPLATE_MODES = ("auto", "always", "never")


class MissingChatTemplate(ConfigError):
    """Chat messages met a tokenizer without a chat template (the message names the fixes)."""


def missing_template_fixes(model: str) -> str:
    return (
        f"the tokenizer of {model!r} has no chat template, so the turns cannot be rendered. Fix one of: "
        "(1) give the tokenizer a template (set tokenizer.chat_template and save_pretrained it into the model folder); "
        "(2) pass one as a Jinja string, e.g. data.init_args.chat_template: \"{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\\n{% endfor %}"
        "{% if add_generation_prompt %}assistant: {% endif %}\"; "
        "(3) set data.init_args.chat_template: never to join the turns' contents as plain text (no role markers)."
    )


@dataclass
class DataReport:
    """Counts of what tokenisation kept, truncated and dropped, printed after set-up."""

    name: str = "data"
    total: int = 0
    kept: int = 0
    prompt_truncated: int = 0
    completion_truncated: int = 0
    dropped: Counter = field(default_factory=Counter)
    # What was done to rows that were kept (a format converted, turns dropped), never silent.
    notes: Counter = field(default_factory=Counter)

    def drop(self, reason: str) -> None:
        self.dropped[reason] += 1

    def note(self, what: str) -> None:
        self.notes[what] += 1

    def summary(self) -> str:
        parts = [f"{self.name}: kept {self.kept}/{self.total} examples"]
        if self.prompt_truncated:
            parts.append(f"{self.prompt_truncated} prompts truncated (left)")
        if self.completion_truncated:
            parts.append(f"{self.completion_truncated} completions truncated (right)")
        parts += [f"{what}: {n}" for what, n in sorted(self.notes.items())]
        parts += [f"dropped {n} ({reason})" for reason, n in sorted(self.dropped.items())]
        return "; ".join(parts)

    def metrics(self, split: str) -> dict[str, float]:
        """The counts as ``data/<split>/...`` scalars for the loggers."""
        metrics = {
            f"data/{split}/kept": self.kept,
            f"data/{split}/dropped": sum(self.dropped.values()),
            f"data/{split}/truncated_prompt": self.prompt_truncated,
            f"data/{split}/truncated_completion": self.completion_truncated,
        }
        for reason, count in self.dropped.items():
            metrics[f"data/{split}/dropped_{slug(reason)}"] = count
        for what, count in self.notes.items():
            metrics[f"data/{split}/{slug(what)}"] = count
        return metrics


def slug(text: str) -> str:
    """A report line as a metric name: lower-case words joined by ``_``."""
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def is_messages(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(m, dict) and "role" in m and "content" in m for m in value)


CHAT_ROLES = ("system", "user", "assistant", "tool")


def check_messages(value: Messages, where: str) -> None:
    """Roles must be ones chat templates know; content must be text. Raises DataError naming the turn."""
    for turn, message in enumerate(value):
        role, content = message["role"], message["content"]
        if role not in CHAT_ROLES:
            raise DataError(
                f"{where}: message {turn} has role {role!r}; roles must be one of {list(CHAT_ROLES)}. "
                "Rename them before training (e.g. human -> user, gpt/bot -> assistant)."
            )
        if not isinstance(content, str):
            raise DataError(f"{where}: message {turn} ({role}) has content of type {type(content).__name__}; it must be a string")


def assistant_text(value: Any, where: str) -> str:
    """The completion as text: a string, or the last assistant turn of a message list."""
    if isinstance(value, str):
        return value
    if is_messages(value):
        turns = [m for m in value if m["role"] == "assistant"]
        if not turns:
            raise DataError(f"{where}: message list has no assistant turn; a completion must contain one (role 'assistant')")
        return turns[-1]["content"]
    raise DataError(f"{where}: expected a string or a list of {{'role', 'content'}} messages, got {type(value).__name__}")


def is_invisible(text: str) -> bool:
    """True when ``text`` holds only whitespace and invisible format characters (Unicode category Cf:
    zero-width space U+200B, joiners U+200C/U+200D, word joiner U+2060, BOM U+FEFF, ...), which
    ``str.strip`` keeps: such a text is empty to a reader, and trains on a token or two of noise."""
    return all(ch.isspace() or unicodedata.category(ch) == "Cf" for ch in text)


def check_text(value: Any, where: str, report: DataReport, field: str) -> bool:
    """True when ``value`` is usable text or messages; counts and skips missing/empty values."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        report.drop(f"missing {field}")
        return False
    if isinstance(value, str):
        if not value.strip():
            report.drop(f"empty {field}")
            return False
        if is_invisible(value):
            report.drop(f"empty {field} (invisible characters only)")
            return False
        return True
    if isinstance(value, list) and not value:
        report.drop(f"empty {field}")
        return False
    if is_messages(value):
        check_messages(value, f"{where}, field {field!r}")
        return True
    hint = ""
    if isinstance(value, list) and value and isinstance(value[0], dict) and {"from", "value"} <= set(value[0]):
        hint = " This looks like ShareGPT ({'from', 'value'}); convert it to {'role', 'content'} with roles user/assistant."
    raise DataError(f"{where}: field {field!r} must be a string or a list of {{'role', 'content'}} chat messages, got {type(value).__name__}: {value!r:.80}.{hint}")


def split_conversation(value: Messages, where: str) -> tuple[Messages, str]:
    """TRL/UltraFeedback convention: ``chosen`` holds the whole conversation; split off the last assistant turn."""
    if not value or value[-1].get("role") != "assistant":
        last = value[-1].get("role") if value else None
        raise DataError(f"{where}: conversation must end with an assistant turn (the completion to train on), but its last turn is {last!r}; drop or fix this row")
    return value[:-1], value[-1]["content"]


def check_chat_template(owner: object, chat_template: str) -> None:
    """ConfigError unless ``chat_template`` is a mode or looks like a Jinja template (catches typos such as 'nevr')."""
    if chat_template in CHAT_TEMPLATE_MODES or (isinstance(chat_template, str) and ("{{" in chat_template or "{%" in chat_template)):
        return
    who = owner if isinstance(owner, str) else type(owner).__name__
    raise ConfigError(f"{who}: chat_template must be one of {list(CHAT_TEMPLATE_MODES)} or a Jinja chat template string (containing '{{{{' or '{{%'), got {chat_template!r}")


def check_lengths(owner: object, max_length: int, max_prompt_length: int) -> None:
    check_range(owner, "max_length", max_length, 2, integer=True)
    check_range(owner, "max_prompt_length", max_prompt_length, 1, max_length, high_open=True, integer=True)


class PromptCompletionEncoder:
    """Encodes (prompt, completion) with the rules in the module docstring.

    ``chat_template``: ``auto`` renders message-list inputs with the tokenizer's template and plain
    strings as they are; ``always`` renders plain strings as a user turn too; ``never`` joins message
    contents with newlines; any other string is a Jinja template installed on ``tokenizer`` (so an
    exported tokenizer carries it) and used as ``auto``. ``name`` names the model in messages.
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        max_length: int = 512,
        max_prompt_length: int = 256,
        chat_template: ChatTemplateMode | str = "auto",
        name: str = "the model",
    ) -> None:
        check_lengths(type(self).__name__, max_length, max_prompt_length)
        check_chat_template(self, chat_template)
        if chat_template not in CHAT_TEMPLATE_MODES:
            tokenizer.chat_template = chat_template
            chat_template = "auto"
        if chat_template == "always" and not tokenizer.chat_template:
            raise ConfigError(f"chat_template='always' renders every prompt as a chat turn, but {missing_template_fixes(name)}")
        self.name = name
        self.tokenizer = tokenizer
        probe = tokenizer("a", add_special_tokens=True)["input_ids"]
        self.adds_bos = tokenizer.bos_token_id is not None and bool(probe) and probe[0] == tokenizer.bos_token_id
        self.max_length = max_length
        self.max_prompt_length = max_prompt_length
        self.chat_template = chat_template

    def _use_template(self, prompt: str | Messages) -> bool:
        if self.chat_template == "never":
            return False
        use = self.chat_template == "always" or is_messages(prompt)
        if use and not self.tokenizer.chat_template:
            raise MissingChatTemplate(f"the prompt is a list of chat messages, but {missing_template_fixes(self.name)}")
        return use

    def _encode_text(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def render_prompt(self, prompt: str | Messages) -> str:
        """The prompt as the model sees it (template applied when it is used)."""
        if self._use_template(prompt):
            messages = prompt if is_messages(prompt) else [{"role": "user", "content": prompt}]
            return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        if is_messages(prompt):
            return "\n".join(m["content"] for m in prompt)
        return prompt

    def encode_prompt(self, prompt: str | Messages) -> list[int]:
        ids = self._encode_text(self.render_prompt(prompt))
        bos = self.tokenizer.bos_token_id
        if self.adds_bos and not self._use_template(prompt) and (not ids or ids[0] != bos):
            ids = [bos] + ids
        # Guard against BOS twice (template text that starts with BOS plus a BOS added elsewhere).
        while bos is not None and len(ids) >= 2 and ids[0] == bos and ids[1] == bos:
            ids = ids[1:]
        return ids

    def encode_completion(self, prompt: str | Messages, completion: str) -> list[int]:
        if self._use_template(prompt):
            messages = prompt if is_messages(prompt) else [{"role": "user", "content": prompt}]
            prefix = self.render_prompt(prompt)
            full = self.tokenizer.apply_chat_template(messages + [{"role": "assistant", "content": completion}], tokenize=False)
            # The template renders the assistant turn with its own end-of-turn markup; keep it.
            text = full[len(prefix) :] if full.startswith(prefix) else completion
        else:
            text = completion
        ids = self._encode_text(text)
        eos = self.tokenizer.eos_token_id
        # Strip trailing whitespace tokens after EOS that some templates emit, then ensure one EOS.
        if eos is not None and eos in ids:
            ids = ids[: len(ids) - ids[::-1].index(eos)]
        if eos is not None and (not ids or ids[-1] != eos):
            ids = ids + [eos]
        return ids

    def truncate(self, prompt_ids: list[int], completions: list[list[int]], report: DataReport) -> tuple[list[int], list[list[int]]] | None:
        """Apply the truncation policy; ``None`` (counted in ``report``) when the example must be dropped."""
        if len(prompt_ids) > self.max_prompt_length:
            bos = self.tokenizer.bos_token_id
            keep_bos = bos is not None and prompt_ids[0] == bos
            tail = prompt_ids[len(prompt_ids) - self.max_prompt_length + int(keep_bos) :]
            prompt_ids = ([bos] if keep_bos else []) + tail
            report.prompt_truncated += 1
        budget = self.max_length - len(prompt_ids)
        if any(len(c) > budget for c in completions):
            completions = [c[:budget] for c in completions]
            report.completion_truncated += 1
        if any(len(c) == 0 for c in completions):
            report.drop("completion empty after truncation")
            return None
        return prompt_ids, completions
