"""Tokenisation: template applied once, BOS/EOS exactly once, one truncation policy, counted drops."""

import pytest

from lit_align.data.tokenize import DataReport, PromptCompletionEncoder
from lit_align.embedded.tokenizer import build_tokenizer


@pytest.fixture
def tok():
    return build_tokenizer()


def test_plain_string_prompt_gets_one_bos_and_completion_one_eos(tok):
    enc = PromptCompletionEncoder(tok, max_length=64, max_prompt_length=32)
    prompt = enc.encode_prompt("the film was")
    assert prompt == [tok.bos_token_id] + tok("the film was", add_special_tokens=False)["input_ids"]
    completion = enc.encode_completion("the film was", "great .")
    assert completion == tok("great .", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    # A completion that already ends in EOS gets no second one.
    assert enc.encode_completion("the film was", "great . </s>").count(tok.eos_token_id) == 1


def test_chat_template_that_writes_bos_gets_no_second_bos(tok):
    enc = PromptCompletionEncoder(tok, max_length=64, max_prompt_length=32)
    messages = [{"role": "user", "content": "the film was"}]
    ids = enc.encode_prompt(messages)
    assert ids.count(tok.bos_token_id) == 1 and ids[0] == tok.bos_token_id
    # The naive path (render, then encode with special tokens) is exactly the double-BOS bug.
    naive = tok(tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))["input_ids"]
    assert naive[:2] == [tok.bos_token_id, tok.bos_token_id]
    assert tok.convert_ids_to_tokens(ids)[-1] == "<|assistant|>"


def test_chat_completion_keeps_template_markup_and_ends_in_single_eos(tok):
    enc = PromptCompletionEncoder(tok, max_length=64, max_prompt_length=32)
    messages = [{"role": "user", "content": "the film was"}]
    completion = enc.encode_completion(messages, "great .")
    assert tok.convert_ids_to_tokens(completion) == ["great", ".", "</s>"]
    full = tok(tok.apply_chat_template(messages + [{"role": "assistant", "content": "great ."}], tokenize=False), add_special_tokens=False)["input_ids"]
    assert enc.encode_prompt(messages) + completion == full


def test_plain_and_chat_inputs_differ_only_by_template(tok):
    enc = PromptCompletionEncoder(tok, max_length=64, max_prompt_length=32)
    plain = enc.encode_prompt("the film was")
    chat = enc.encode_prompt([{"role": "user", "content": "the film was"}])
    words = tok("the film was", add_special_tokens=False)["input_ids"]
    assert plain[1:] == words
    assert words == chat[2:-1]  # <s> <|user|> words <|assistant|>
    always = PromptCompletionEncoder(tok, 64, 32, chat_template="always").encode_prompt("the film was")
    assert always == chat


def test_truncation_policy_prompt_left_completion_right_and_counts(tok):
    enc = PromptCompletionEncoder(tok, max_length=10, max_prompt_length=4)
    report = DataReport()
    prompt = [tok.bos_token_id, 11, 12, 13, 14, 15]
    out = enc.truncate(prompt, [[1, 2, 3, 4, 5, 6, 7, 8], [9, 9]], report)
    assert out is not None
    new_prompt, (long, short) = out
    assert new_prompt == [tok.bos_token_id, 13, 14, 15]  # left-truncated, BOS kept
    assert long == [1, 2, 3, 4, 5, 6] and short == [9, 9]  # right-truncated to max_length
    assert (report.prompt_truncated, report.completion_truncated) == (1, 1)


def test_truncation_that_empties_a_completion_drops_and_counts(tok):
    enc = PromptCompletionEncoder(tok, max_length=5, max_prompt_length=4)
    report = DataReport()
    assert enc.truncate([1, 2, 3, 4], [[5], []], report) is None
    assert report.dropped["completion empty after truncation"] == 1
    assert "dropped 1" in report.summary()


def test_max_prompt_length_must_leave_room(tok):
    with pytest.raises(ValueError, match="max_prompt_length"):
        PromptCompletionEncoder(tok, max_length=8, max_prompt_length=8)


def test_chat_messages_without_a_template_name_the_three_fixes(tok):
    from lit_align.data.tokenize import MissingChatTemplate

    tok.chat_template = None
    enc = PromptCompletionEncoder(tok, max_length=64, max_prompt_length=32, name="my/gpt2")
    assert enc.encode_prompt("the film was")  # plain text needs no template
    with pytest.raises(MissingChatTemplate, match=r"the tokenizer of 'my/gpt2' has no chat template.*tokenizer\.chat_template.*Jinja string.*chat_template: never"):
        enc.encode_prompt([{"role": "user", "content": "the film was"}])
    never = PromptCompletionEncoder(tok, max_length=64, max_prompt_length=32, chat_template="never")
    turns = [{"role": "system", "content": "the film"}, {"role": "user", "content": "was"}]
    assert never.render_prompt(turns) == "the film\nwas"
    # A template string is installed on the tokenizer (so an export carries it) and used for chat rows.
    given = PromptCompletionEncoder(tok, max_length=64, max_prompt_length=32, chat_template="{% for m in messages %}{{ m['content'] }} {% endfor %}")
    assert tok.chat_template.startswith("{% for m in messages %}") and given.render_prompt(turns) == "the film was "
    with pytest.raises(ValueError, match=r"chat_template must be one of \['auto', 'always', 'never'\] or a Jinja chat template string.*got 'nevr'"):
        PromptCompletionEncoder(tok, chat_template="nevr")


def test_plain_prompts_get_a_bos_only_when_the_tokenizer_adds_one(tok):
    from tokenizers import processors

    assert PromptCompletionEncoder(tok).adds_bos  # embedded tokenizer: Llama-like, adds <s>
    tok._tokenizer.post_processor = processors.TemplateProcessing(single="$A", pair="$A $B")  # GPT-2-like: adds nothing
    enc = PromptCompletionEncoder(tok, max_length=64, max_prompt_length=32)
    assert not enc.adds_bos
    assert enc.encode_prompt("the film was") == tok("the film was")["input_ids"] == tok("the film was", add_special_tokens=False)["input_ids"]
