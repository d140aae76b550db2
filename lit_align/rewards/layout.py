"""The token layout a learned reward scores: [BOS] + the text + exactly one EOS, on every tokenizer.

lit_align's ``RewardModel`` trains on rows built by ``PromptCompletionEncoder``: the BOS the
tokenizer adds on its own (none for GPT-2, ``</s>`` for OPT, ``<s>`` for Llama), the text without
any other special token, and one EOS at the end; its head reads that EOS. A reward must see the
same layout at inference, whatever the tokenizer's conventions:

* GPT-2: BOS = EOS = ``<|endoftext|>``, nothing added: ``text EOS``;
* OPT: BOS = EOS = ``</s>``, prepended: ``</s> text </s>``. The leading ``</s>`` is a BOS, not the
  end of the text: cutting "after the last EOS" there scored every text as ``</s>`` alone;
* Llama-style tokenizers that add BOS *and* EOS: ``<s> text </s>``, one EOS, not two.

The text is tokenized without special tokens and the BOS/EOS are placed here, so a tokenizer that
appends EOS itself, or prepends a BOS that equals its EOS, changes nothing.
"""

from __future__ import annotations

from transformers import PreTrainedTokenizerBase


def adds_bos(tokenizer: PreTrainedTokenizerBase) -> bool:
    """Whether ``tokenizer`` puts its BOS in front of a text by itself (the training encoder's probe)."""
    probe = tokenizer("a", add_special_tokens=True)["input_ids"]
    return tokenizer.bos_token_id is not None and bool(probe) and probe[0] == tokenizer.bos_token_id


def ends_in_eos(tokenizer: PreTrainedTokenizerBase, ids: list[int], start: int) -> int | None:
    """Length of ``ids`` up to and including an EOS that ends the text (only whitespace after it,
    e.g. a chat template's newline after its end-of-turn token); None when the text does not end in EOS.
    Positions before ``start`` (the BOS, which may be the same token as EOS) do not count."""
    eos = tokenizer.eos_token_id
    body = ids[start:]
    if eos is None or eos not in body:
        return None
    end = start + len(body) - body[::-1].index(eos)
    return end if not tokenizer.decode(ids[end:]).strip() else None


def reward_input_ids(tokenizer: PreTrainedTokenizerBase, text: str, bos: bool, max_length: int) -> list[int]:
    """Token ids of ``text`` as a reward model trained by ``RewardModel`` reads them: the BOS when
    ``bos`` (and the text does not start with one already, e.g. from a chat template), the text,
    exactly one EOS. Cut from the left to ``max_length``, keeping the BOS (as the training encoder
    truncates prompts): the completion and its EOS are at the end."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    bos_id = tokenizer.bos_token_id
    if bos and (not ids or ids[0] != bos_id):
        ids = [bos_id] + ids
    # One BOS only (a rendered template may bring its own; the encoder guards against two as well).
    while bos_id is not None and len(ids) >= 2 and ids[0] == ids[1] == bos_id:
        ids = ids[1:]
    start = int(bos_id is not None and bool(ids) and ids[0] == bos_id)
    end = ends_in_eos(tokenizer, ids, start)
    ids = ids[:end] if end is not None else ids + [tokenizer.eos_token_id]
    if len(ids) > max_length:
        ids = ids[:start] + ids[len(ids) - max_length + start :]
    return ids
