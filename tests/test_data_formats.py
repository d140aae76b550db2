"""The public data layouts (issue 23 §4, §8): HH-RLHF's implicit prompt, UltraFeedback's string prompt
beside message completions, plain-text SFT, and fitting long multi-turn prompts by whole turns.
Every conversion is counted in the data report."""

from __future__ import annotations

import json

from lit_align.data.formats import CHAT_PROMPT_NOTE, DIALOGUE_NOTE, IMPLICIT_PROMPT_NOTE, NO_MARKER_DROP, split_implicit_prompt
from lit_align.data.pairwise import PairwiseDataModule
from lit_align.data.sft import PLAIN_TEXT_NOTE, SFTDataModule
from lit_align.data.tokenize import DataReport
from lit_align.data.unpaired import UnpairedDataModule
from lit_align.data.turns import TURNS_NOTE, fit_prompt_turns, fit_turns


def write_jsonl(path, rows) -> str:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


def make(cls, path, **kwargs):
    options = dict(model="embedded:tiny", dataset=str(path), val_split="train", batch_size=1, max_length=64, max_prompt_length=48)
    module = cls(**{**options, **kwargs})
    module.setup("fit")
    return module


HH_PROMPT = "\n\nHuman: the film was\n\nAssistant: very good\n\nHuman: and the plot\n\nAssistant:"


# ----- Anthropic HH-RLHF: the prompt is the shared beginning ----------------------------------------
def test_implicit_prompt_ends_at_the_last_shared_assistant_marker():
    assert split_implicit_prompt(HH_PROMPT + " great", HH_PROMPT + " bad") == (HH_PROMPT, " great", " bad")
    # Answers that start alike: the shared beginning ends mid-answer, the prompt must not.
    assert split_implicit_prompt(HH_PROMPT + " it was great", HH_PROMPT + " it was bad") == (HH_PROMPT, " it was great", " it was bad")
    # A marker cut by the divergence is not shared: the earlier one is the split.
    first = "\n\nHuman: hi\n\nAssistant:"
    assert split_implicit_prompt(first + " a\n\nAssistant: b", first + " a\n\nAssist c") == (first, " a\n\nAssistant: b", " a\n\nAssist c")
    assert split_implicit_prompt("\n\nHuman: hi there", "\n\nHuman: hi you") is None  # no assistant turn shared


def test_hh_rows_train_with_the_prompt_split_off_and_counted(tmp_path):
    rows = [
        {"chosen": HH_PROMPT + " very good", "rejected": HH_PROMPT + " very bad"},
        {"chosen": HH_PROMPT + " the film was great", "rejected": HH_PROMPT + " the film was dull"},
        {"chosen": "\n\nHuman: the film was great", "rejected": "\n\nHuman: the film was bad"},  # no shared assistant turn
    ]
    module = make(PairwiseDataModule, write_jsonl(tmp_path / "hh.jsonl", rows))
    report = module.reports["train"]
    assert (report.total, report.kept) == (3, 2)
    assert report.notes[IMPLICIT_PROMPT_NOTE] == 2 and dict(report.dropped) == {NO_MARKER_DROP: 1}
    tok = module.tokenizer
    first, second = module.train_examples
    assert first["prompt_text"] == second["prompt_text"] == HH_PROMPT
    assert first["prompt_ids"] == [tok.bos_token_id] + tok(HH_PROMPT, add_special_tokens=False)["input_ids"]
    assert first["chosen_ids"] == tok(" very good", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    assert tok.decode(second["rejected_ids"], skip_special_tokens=True).split() == ["the", "film", "was", "dull"]
    assert module.report_metrics()["data/train/dropped"] == 1


def test_kto_on_hh_pairs_splits_each_dialogue_after_its_last_assistant_turn(tmp_path):
    rows = [{"chosen": HH_PROMPT + " very good", "rejected": HH_PROMPT + " very bad"}] * 2 + [{"chosen": "\n\nHuman: great", "rejected": "\n\nHuman: bad"}]
    module = make(UnpairedDataModule, write_jsonl(tmp_path / "hh.jsonl", rows), batch_size=2)
    report, tok = module.reports["train"], module.tokenizer
    assert (report.total, report.kept, report.notes[DIALOGUE_NOTE], dict(report.dropped)) == (6, 4, 4, {"missing prompt": 2})
    assert {ex["prompt_text"] for ex in module.train_examples} == {HH_PROMPT} and module.label_counts() == (2, 2)
    assert module.train_examples[1]["completion_ids"] == tok(" very bad", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]


# ----- UltraFeedback-binarized: a string prompt beside message completions ---------------------------
UF = {
    "prompt": "the film was",
    "chosen": [{"role": "user", "content": "the film was"}, {"role": "assistant", "content": "very good ."}],
    "rejected": [{"role": "user", "content": "the film was"}, {"role": "assistant", "content": "very bad ."}],
}


def test_ultrafeedback_rows_render_the_prompt_through_the_template(tmp_path):
    path = write_jsonl(tmp_path / "uf.jsonl", [UF, {**UF, "chosen": UF["chosen"][1:], "rejected": UF["rejected"][1:]}])
    module = make(PairwiseDataModule, path)
    tok, report = module.tokenizer, module.reports["train"]
    assert report.notes[CHAT_PROMPT_NOTE] == 2
    rendered = tok.apply_chat_template([{"role": "user", "content": "the film was"}], tokenize=False, add_generation_prompt=True)
    full = tok.apply_chat_template(UF["chosen"], tokenize=False)
    for example in module.train_examples:  # from the conversation, or the prompt as the user turn
        assert example["prompt_text"] == rendered
        assert example["prompt_ids"] + example["chosen_ids"] == tok(full, add_special_tokens=False)["input_ids"]
    # chat_template: never keeps the plain rendering, and says nothing was templated.
    plain = make(PairwiseDataModule, path, chat_template="never")
    assert plain.train_examples[0]["prompt_text"] == "the film was" and not plain.reports["train"].notes


# ----- plain language-model text for SFT ---------------------------------------------------------------
def test_plain_text_rows_are_sft_with_an_empty_prompt(tmp_path):
    rows = [{"text": "the film was very good ."}, {"text": "the plot was slow ."}, {"text": "  "}]
    module = make(SFTDataModule, write_jsonl(tmp_path / "text.jsonl", rows))
    tok, report = module.tokenizer, module.reports["train"]
    assert (report.kept, report.notes[PLAIN_TEXT_NOTE], dict(report.dropped)) == (2, 2, {"empty completion": 1})
    example = module.train_examples[0]
    assert example["prompt_ids"] == [tok.bos_token_id]  # the tokenizer adds BOS: the text follows it
    assert example["completion_ids"] == tok("the film was very good .", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    # The mapping the old error suggested now works too, with the same examples.
    mapped = make(SFTDataModule, write_jsonl(tmp_path / "doc.jsonl", [{"body": r["text"]} for r in rows]), columns={"completion": "body"})
    assert mapped.train_examples == module.train_examples
    assert module.eval_prompts(4) == [("", [tok.bos_token_id])] * 2


# ----- long multi-turn prompts lose whole turns before tokens --------------------------------------------
def turns(*contents):
    roles = ["system"] + ["user", "assistant"] * len(contents)
    return [{"role": role, "content": content} for role, content in zip(roles, contents)]


def test_fit_turns_drops_oldest_exchanges_keeps_system_then_drops_it():
    words = lambda messages: sum(len(m["content"].split()) + 1 for m in messages)  # noqa: E731  (a turn header = 1)
    prompt = turns("be fair", "a b c", "d e", "f g h")
    assert fit_turns(prompt, words, 100) == (prompt, 0, False)
    fitted, dropped, dropped_system = fit_turns(prompt, words, 7)  # system (3) + last user turn (4)
    assert fitted == [prompt[0], prompt[3]] and (dropped, dropped_system) == (2, False)
    fitted, dropped, dropped_system = fit_turns(prompt, words, 5)  # the last turn alone (4): system dropped
    assert fitted == [prompt[3]] and (dropped, dropped_system) == (2, True)


def test_long_chat_prompt_keeps_its_system_header_and_is_counted(tmp_path):
    system = {"role": "system", "content": "be fair"}
    history = [{"role": r, "content": "the film was very good and the plot was slow"} for r in ("user", "assistant") * 3]
    row = {"messages": [system, *history, {"role": "user", "content": "the plot was"}, {"role": "assistant", "content": "great ."}]}
    module = make(SFTDataModule, write_jsonl(tmp_path / "chat.jsonl", [row]), max_prompt_length=16)
    tok, report = module.tokenizer, module.reports["train"]
    example = module.train_examples[0]
    assert example["prompt_text"] == tok.apply_chat_template([system, {"role": "user", "content": "the plot was"}], tokenize=False, add_generation_prompt=True)
    assert tok.convert_ids_to_tokens(example["prompt_ids"])[:2] == ["<s>", "<|system|>"]
    assert report.notes[TURNS_NOTE] == 1 and report.prompt_truncated == 0


def test_hh_string_prompts_lose_whole_exchanges():
    report = DataReport()
    length = lambda text: len(text.split())  # noqa: E731
    fitted = fit_prompt_turns(HH_PROMPT, length, 5, report)
    assert fitted == "\n\nHuman: and the plot\n\nAssistant:" and report.notes[TURNS_NOTE] == 1
    assert fit_prompt_turns("one long turn here", length, 2, report) == "one long turn here"  # the token cut follows
