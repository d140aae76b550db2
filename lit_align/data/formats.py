"""The public preference-data layouts that do not name their prompt in a ``prompt`` column.

* **Implicit prompt** (Anthropic HH-RLHF): ``chosen`` and ``rejected`` are whole dialogues
  ``"\\n\\nHuman: ...\\n\\nAssistant: ..."`` and the prompt is their shared beginning. TRL's
  ``maybe_extract_prompt`` splits at the first differing character (one space back); we split at
  the end of the last ``"\\n\\nAssistant:"`` marker inside the shared beginning instead, so a pair
  whose answers start alike ("I think ...") never trains on a prompt that holds half an answer.
  The completions keep their leading space, as TRL's do. A pair whose shared beginning holds no
  marker has no recoverable prompt and is dropped (counted). A single dialogue without a prompt
  (KTO rows unpaired from HH pairs) is split after its own last marker.
* **String prompt, message completions** (UltraFeedback-binarized as HuggingFaceH4 ships it): a
  ``prompt`` string next to ``chosen``/``rejected`` conversations that repeat it as their user turn.
  The prompt is then the conversation before the completion's last assistant turn (a user turn
  holding the prompt when the completion is a lone assistant turn), so it is rendered through the
  chat template like the completion it is paired with (TRL applies the template here too).
"""

from __future__ import annotations

from lit_align.data.tokenize import DataError, DataReport, Messages, is_messages

ASSISTANT_MARKER = "\n\nAssistant:"
# Report lines (also metric names data/<split>/<slug>): short, and each says what happened.
IMPLICIT_PROMPT_NOTE = "prompt split off chosen/rejected at the last shared Assistant turn (HH-RLHF)"
NO_MARKER_DROP = "no prompt, and chosen/rejected share no Assistant turn"
DIALOGUE_NOTE = "prompt split off the completion at its last Assistant turn (HH-RLHF)"
CHAT_PROMPT_NOTE = "string prompt rendered with the chat template, as its message completions"


def split_implicit_prompt(chosen: str, rejected: str) -> tuple[str, str, str] | None:
    """(prompt, chosen completion, rejected completion), split at the end of the last assistant
    marker within the longest common prefix of ``chosen`` and ``rejected``; None without one."""
    common = 0
    for a, b in zip(chosen, rejected):
        if a != b:
            break
        common += 1
    start = chosen.rfind(ASSISTANT_MARKER, 0, common)  # a marker that lies wholly inside the shared part
    if start < 0:
        return None
    end = start + len(ASSISTANT_MARKER)
    return chosen[:end], chosen[end:], rejected[end:]


def with_implicit_prompt(row: dict, report: DataReport) -> dict | None:
    """``row`` with ``prompt`` split off string ``chosen``/``rejected`` when the data has no ``prompt``
    column (counted); None when no prompt can be found (dropped, counted). Other rows are returned
    unchanged: a ``prompt`` column with a missing value is a missing prompt, not this layout."""
    chosen, rejected = row.get("chosen"), row.get("rejected")
    if "prompt" in row or not isinstance(chosen, str) or not isinstance(rejected, str):
        return row
    if not chosen.strip() or not rejected.strip():
        return row  # read_texts drops and counts the empty side
    split = split_implicit_prompt(chosen, rejected)
    if split is None:
        report.drop(NO_MARKER_DROP)
        return None
    report.note(IMPLICIT_PROMPT_NOTE)
    prompt, chosen, rejected = split
    return {**row, "prompt": prompt, "chosen": chosen, "rejected": rejected}


def split_dialogue(text: str) -> tuple[str, str] | None:
    """(prompt, completion) of one HH-style dialogue, split after its last assistant marker; None
    without one. The one-sided analogue of ``split_implicit_prompt``, for an unpaired completion
    (KTO rows unpaired from HH pairs) as ``split_conversation`` is for chat messages."""
    start = text.rfind(ASSISTANT_MARKER)
    if start < 0:
        return None
    end = start + len(ASSISTANT_MARKER)
    return text[:end], text[end:]


def chat_prompt(prompt: str, completion: Messages) -> Messages:
    """The prompt of a string-prompt row whose completion is a message list, as chat messages: the
    conversation before the completion's last assistant turn, or the prompt as one user turn."""
    last = max((i for i, m in enumerate(completion) if m["role"] == "assistant"), default=0)
    return completion[:last] if last > 0 else [{"role": "user", "content": prompt}]


def uses_chat_completions(row: dict, fields: tuple[str, ...] | list[str]) -> bool:
    return any(is_messages(row.get(name)) for name in fields)


def template_failed(where: str, row: dict, error: Exception, model: str) -> DataError:
    """The chat template raised on ``row``: its own message, the roles it was given, and the fixes."""
    roles = [m["role"] for value in row.values() if is_messages(value) for m in value]
    given = f" (the row's turns have roles {sorted(set(roles))})" if roles else ""
    return DataError(
        f"{where}: the chat template of {model!r} refused this row{given}: {error}. Fix one of: "
        "(1) reshape the turns it rejects before training (e.g. fold a system turn into the first user turn, "
        "make user/assistant turns alternate, rename roles to ones it knows); "
        "(2) give another template as a Jinja string in data.init_args.chat_template; "
        "(3) set data.init_args.chat_template: never to join the turns' contents as plain text."
    )
