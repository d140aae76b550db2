"""Fitting a long multi-turn prompt into ``max_prompt_length`` by whole turns before any token is cut.

Cutting a rendered conversation from the left lands mid-turn: the system turn loses its role
header and the model trains on a prompt shape it never sees at inference. So a prompt that is too
long first loses whole turns, oldest first, always keeping the turn(s) the completion answers:

* the oldest non-system turns go first, and turns that would then lead the conversation without
  a user turn before them (assistant/tool) go with them, since many templates require user-first;
* the system turn stays if it fits beside what is left, and is dropped only if not;
* only when the last turn alone is still too long does the usual left cut of tokens follow.

Chat messages are fitted by message; plain-string dialogues in the HH-RLHF layout by their
``"\\n\\nHuman:"`` exchanges. Every shortened prompt is counted in the data report.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from lit_align.data.tokenize import DataReport, Messages, is_messages

HUMAN_MARKER = "\n\nHuman:"
TURNS_NOTE = "prompts shortened by dropping their oldest whole turns"
SYSTEM_NOTE = "prompts whose system turn was dropped to fit"


def fit_turns(prompt: Messages, length: Callable[[Messages], int], max_length: int) -> tuple[Messages, int, bool]:
    """(fitted messages, number of non-system turns dropped, whether the system turn was dropped)."""
    system = prompt[:1] if prompt and prompt[0]["role"] == "system" else []
    rest = prompt[len(system) :]
    dropped = 0
    while len(rest) > 1 and length(system + rest) > max_length:
        rest, dropped = rest[1:], dropped + 1
        while len(rest) > 1 and rest[0]["role"] != "user":
            rest, dropped = rest[1:], dropped + 1
    dropped_system = bool(system) and length(system + rest) > max_length
    return (rest if dropped_system else system + rest), dropped, dropped_system


def exchanges(text: str) -> list[str]:
    """An HH-style dialogue split before each ``"\\n\\nHuman:"`` (the first piece may be a preamble)."""
    starts = [match.start() for match in re.finditer(re.escape(HUMAN_MARKER), text)]
    if not starts or starts[0] != 0:
        starts = [0] + starts
    return [text[a:b] for a, b in zip(starts, starts[1:] + [len(text)])]


def fit_prompt_turns(prompt: str | Messages, length: Callable[[str | Messages], int], max_length: int, report: DataReport) -> str | Messages:
    """``prompt`` shortened by whole turns when ``length(prompt) > max_length`` (counted in ``report``);
    unchanged when it fits or has a single turn (the token cut then applies)."""
    if length(prompt) <= max_length:
        return prompt
    if is_messages(prompt):
        fitted, dropped, dropped_system = fit_turns(prompt, length, max_length)
    else:
        pieces = exchanges(prompt)
        if len(pieces) < 2:
            return prompt
        # Pieces as pseudo-turns: a preamble before the first exchange plays the system turn.
        turns = [{"role": "system" if i == 0 and not p.startswith(HUMAN_MARKER) else "user", "content": p} for i, p in enumerate(pieces)]
        as_text = lambda messages: "".join(m["content"] for m in messages)  # noqa: E731
        kept, dropped, dropped_system = fit_turns(turns, lambda messages: length(as_text(messages)), max_length)
        fitted = as_text(kept)
    if dropped:
        report.note(TURNS_NOTE)
    if dropped_system:
        report.note(SYSTEM_NOTE)
    return fitted
