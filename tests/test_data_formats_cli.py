"""Issue 23 §4-§5 through the command line, as a user meets them: the recipes on HH-RLHF-shaped pairs
and on KTO `label` rows train; a seq2seq model and a chat template that raises each stop with one
paragraph (exit status 1, no traceback) naming what was given and the fix."""

from __future__ import annotations

import json
import os

import pytest

from lit_align.cli import cli_main
from tests.conftest import REPO, run_cli

FAST = ["--model.init_args.model=embedded:micro", "--data.init_args.val_split=train", "--data.init_args.batch_size=2",
        "--trainer.fast_dev_run=1", "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]
WORDS = ["good", "great", "dull", "bland", "superb", "awful"]


def write_jsonl(path, rows) -> str:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


def fails_with_one_paragraph(capsys, args: list[str], *expected: str) -> str:
    with pytest.raises(SystemExit) as exit_info:
        cli_main(args)
    err = capsys.readouterr().err
    assert exit_info.value.code == 1 and "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("lit_align: error: ")]
    assert len(lines) == 1 and all(text in lines[0] for text in expected), err
    return lines[0]


def test_dpo_recipe_trains_on_hh_rlhf_pairs(tmp_path):
    prompt = "\n\nHuman: the film was\n\nAssistant:"
    rows = [{"chosen": f"{prompt} very {WORDS[i % 2]} .", "rejected": f"{prompt} very {WORDS[2 + i % 2]} ."} for i in range(4)]
    cli = run_cli(["fit", "--config", os.path.join(REPO, "configs/dpo.yaml"), *FAST, f"--data.init_args.dataset={write_jsonl(tmp_path / 'hh.jsonl', rows)}"], str(tmp_path))
    assert cli.trainer.global_step == 1
    report = cli.datamodule.reports["train"]
    assert report.kept == 4 and sum(report.notes.values()) == 4 and not report.dropped


def test_kto_recipe_detects_label_rows(tmp_path):
    rows = [{"prompt": "the film was", "completion": f"very {WORDS[i % 6]} .", "label": WORDS[i % 6] in ("good", "great", "superb")} for i in range(6)]
    cli = run_cli(["fit", "--config", os.path.join(REPO, "configs/kto.yaml"), *FAST, f"--data.init_args.dataset={write_jsonl(tmp_path / 'kto.jsonl', rows)}"], str(tmp_path))
    assert cli.trainer.global_step == 1 and cli.datamodule.label_counts() == (3, 3)  # read as labelled, not as pairs


def test_kto_forced_layout_names_from_pairs(tmp_path, capsys):
    rows = [{"prompt": "the film was", "completion": "very good .", "label": True}] * 4
    fails_with_one_paragraph(capsys, ["fit", "--config", os.path.join(REPO, "configs/kto.yaml"), *FAST, "--data.init_args.from_pairs=true",
                                      f"--data.init_args.dataset={write_jsonl(tmp_path / 'kto.jsonl', rows)}"],
                             "kto.jsonl", "missing column(s) ['chosen', 'rejected']", "from_pairs=True", "from_pairs: null")


def test_seq2seq_model_is_one_paragraph(tmp_path, capsys):
    from transformers import T5Config

    from lit_align.embedded.tokenizer import build_tokenizer

    folder = str(tmp_path / "t5")  # a tiny T5: config and tokenizer only, nothing downloaded
    T5Config(vocab_size=96, d_model=8, d_kv=4, d_ff=16, num_layers=1, num_heads=2, architectures=["T5ForConditionalGeneration"]).save_pretrained(folder)
    build_tokenizer().save_pretrained(folder)
    message = fails_with_one_paragraph(capsys, ["fit", "--config", os.path.join(REPO, "configs/sft.yaml"), *FAST, f"--model.init_args.model={folder}"],
                                       folder, "'t5'", "T5ForConditionalGeneration", "encoder-decoder", "causal")
    assert "Config," not in message  # not transformers' list of every causal config


def test_chat_template_that_raises_names_the_row_and_the_fixes(tmp_path, capsys):
    from lit_align.embedded.tokenizer import build_tokenizer
    from lit_align.modeling import load_causal_lm

    # Mistral-style: the template itself rejects a system turn.
    folder = str(tmp_path / "model")
    tokenizer = build_tokenizer()
    tokenizer.chat_template = (
        "{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}"
        "{{ '<|' + m['role'] + '|> ' + m['content'] + ' ' }}{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|> ' }}{% endif %}"
    )
    load_causal_lm("embedded:micro", tokenizer).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    chat = [{"role": "user", "content": "the film was"}, {"role": "assistant", "content": "very good ."}]
    rows = [{"messages": chat}] * 2 + [{"messages": [{"role": "system", "content": "be fair"}, *chat]}]
    data = write_jsonl(tmp_path / "chat.jsonl", rows)
    fails_with_one_paragraph(capsys, ["fit", "--config", os.path.join(REPO, "configs/sft.yaml"), *FAST, f"--model.init_args.model={folder}", f"--data.init_args.dataset={data}"],
                             "chat.jsonl [train] row 2", "Only user and assistant roles are supported!", "'system'", "fold a system turn", "chat_template: never")


def test_sft_recipe_trains_on_plain_text_with_a_tokenizer_that_adds_no_bos(tmp_path):
    from tests.families import save_family

    folder = save_family("gpt2", str(tmp_path / "gpt2"))  # BOS = EOS, never added: the prompt is empty
    rows = [{"text": f"the film was very {WORDS[i % 6]} ."} for i in range(4)]
    cli = run_cli(["fit", "--config", os.path.join(REPO, "configs/sft.yaml"), *FAST, f"--model.init_args.model={folder}",
                   f"--data.init_args.dataset={write_jsonl(tmp_path / 'text.jsonl', rows)}"], str(tmp_path))
    assert cli.trainer.global_step == 1 and 0 < float(cli.trainer.callback_metrics["train/loss"]) < 100
    assert all(ex["prompt_ids"] == [] for ex in cli.datamodule.train_examples)
