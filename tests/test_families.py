"""Works on more than Llama (issue 14, item 6): GPT-2, Qwen2 and Gemma-2 style checkpoints (tests/families.py).

For each family: DPO, KTO, ORPO and SFT run through the CLI entry point on plain and on
conversational data, the exported policy reloads with ``AutoModelForCausalLM`` (same logits as the
trained module, not the starting weights) and generates; the compact head's log-probs and gradients
equal the model's own logits path. The matrix runs in-process (``lit_align.cli.main``); the
error a user sees comes through ``cli_main``, what ``python -m lit_align`` calls.
"""

from __future__ import annotations

import json
import os

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from lit_align.cli import main
from lit_align.data.pairwise import PairwiseDataModule
from lit_align.data.sft import SFTDataModule
from lit_align.data.unpaired import UnpairedDataModule
from lit_align.errors import ConfigError
from lit_align.head import completion_logps, split_head
from tests.conftest import cli_in_process
from tests.families import FAMILIES, PLAIN_CHAT_TEMPLATE, family_checkpoints  # noqa: F401  (fixture)

METHODS = {
    "dpo": ("lit_align.algorithms.DPO", "lit_align.data.pairwise.PairwiseDataModule", "pairwise"),
    "kto": ("lit_align.algorithms.KTO", "lit_align.data.unpaired.UnpairedDataModule", "unpaired"),
    "orpo": ("lit_align.algorithms.ORPO", "lit_align.data.pairwise.PairwiseDataModule", "pairwise"),
    "sft": ("lit_align.algorithms.SFT", "lit_align.data.sft.SFTDataModule", "sft"),
}
SIZES = {"max_length": 64, "max_prompt_length": 32}


def cli_args(model_class: str, checkpoint: str, data_class: str, dataset: str, root: str) -> list[str]:
    """A small run: 2 steps of batch 2, one validation batch, export only (no checkpoints, no sampled evaluation)."""
    return [
        "fit", "--model", model_class, "--model.model", checkpoint, "--model.optimizer.init_args.lr", "1e-2",
        "--data", data_class, "--data.dataset", dataset, "--data.batch_size", "2", "--data.val_fraction", "0.2",
        "--data.max_length", str(SIZES["max_length"]), "--data.max_prompt_length", str(SIZES["max_prompt_length"]),
        "--trainer.logger", "false", "--trainer.default_root_dir", root, "--trainer.max_steps", "2", "--trainer.val_check_interval", "2",
        "--trainer.limit_val_batches", "1", "--trainer.num_sanity_val_steps", "0", "--trainer.enable_checkpointing", "false",
        "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
        "--trainer.callbacks", json.dumps([{"class_path": "lit_align.callbacks.ExportPretrained"}]),
    ]  # fmt: skip


def logits(model, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=input_ids, attention_mask=attention_mask).logits


@pytest.mark.parametrize("kind", ["plain", "chat"])
@pytest.mark.parametrize("method", list(METHODS))
@pytest.mark.parametrize("family", FAMILIES)
def test_method_trains_exports_and_reloads(family_checkpoints, family, method, kind, tmp_path):  # noqa: F811
    model_class, data_class, data_format = METHODS[method]
    checkpoint = family_checkpoints["models"][family]
    args = cli_args(model_class, checkpoint, data_class, family_checkpoints["data"][data_format, kind], str(tmp_path))
    if family == "gpt2" and kind == "chat":
        args += ["--data.chat_template", PLAIN_CHAT_TEMPLATE]  # the documented fix for a tokenizer without one
    cli = main(args)
    assert cli.trainer.global_step == 2
    assert torch.isfinite(cli.trainer.callback_metrics["train/loss"]) and torch.isfinite(cli.trainer.callback_metrics["val/loss"])

    exported = os.path.join(str(tmp_path), "hf_model")
    reloaded = AutoModelForCausalLM.from_pretrained(exported).eval()
    tokenizer = AutoTokenizer.from_pretrained(exported)
    assert type(reloaded).__name__ == type(cli.model.policy.policy).__name__
    batch = cli.datamodule.collate(cli.datamodule.val_examples[:2])
    inputs = batch.input_ids[: len(cli.datamodule.val_examples[:2])], batch.attention_mask[:2]
    policy = cli.model.policy.policy.eval()
    # The export holds the trained weights (tied heads included), not the starting ones.
    torch.testing.assert_close(logits(reloaded, *inputs), logits(policy, *inputs), atol=1e-5, rtol=1e-5)
    start = AutoModelForCausalLM.from_pretrained(checkpoint).eval()
    assert (logits(start, *inputs) - logits(policy, *inputs)).abs().max() > 1e-4

    if kind == "chat":
        # The exported tokenizer renders chat the way training did (GPT-2: the template passed in).
        assert tokenizer.chat_template == (PLAIN_CHAT_TEMPLATE if family == "gpt2" else AutoTokenizer.from_pretrained(checkpoint).chat_template)
        prompt = tokenizer.apply_chat_template([{"role": "user", "content": "the film was"}], add_generation_prompt=True, return_dict=True, return_tensors="pt")
    else:
        prompt = tokenizer("the film was", return_tensors="pt")
    out = reloaded.generate(**prompt, max_new_tokens=4, min_new_tokens=4, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    assert out.shape == (1, prompt["input_ids"].shape[1] + 4)
    assert isinstance(tokenizer.decode(out[0, prompt["input_ids"].shape[1] :]), str)


@pytest.mark.parametrize("family", FAMILIES)
def test_compact_head_equals_the_models_own_logits(family_checkpoints, family):  # noqa: F811
    checkpoint = family_checkpoints["models"][family]
    data = PairwiseDataModule(model=checkpoint, dataset=family_checkpoints["data"]["pairwise", "plain" if family == "gpt2" else "chat"], batch_size=2, **SIZES)
    data.setup()
    batch = data.collate(data.train_examples[:3])  # 6 rows of different lengths: right padding inside the batch
    assert (batch.attention_mask == 0).any()
    model = AutoModelForCausalLM.from_pretrained(checkpoint)

    def by_logits():
        logps = torch.log_softmax(model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits[:, :-1].float(), -1)
        return (logps.gather(-1, batch.input_ids[:, 1:, None]).squeeze(-1) * batch.loss_mask[:, 1:]).sum(-1)

    def grads(total: torch.Tensor) -> dict[str, torch.Tensor]:
        model.zero_grad()
        total.sum().backward()
        return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}

    expected = by_logits()
    expected_grads = grads(expected)
    compact = completion_logps(model, batch.input_ids, batch.attention_mask, batch.loss_mask, head="compact").sum
    torch.testing.assert_close(compact, expected, atol=1e-4, rtol=1e-5)
    compact_grads = grads(compact)
    assert compact_grads.keys() == expected_grads.keys()
    for name, grad in expected_grads.items():
        torch.testing.assert_close(compact_grads[name], grad, atol=1e-5, rtol=1e-4, msg=name)

    parts = split_head(model)
    if family == "gemma2":
        # Soft-capped logits: the compact head must not split this model — the plain head is wrong here.
        assert parts is None
        assert model.config.final_logit_softcapping and model.config.sliding_window < batch.input_ids.shape[1]
    else:
        assert parts is not None  # the compact path really ran
        assert (parts[1].weight is model.get_input_embeddings().weight) == (family == "gpt2")  # tied head for GPT-2 only


# ----- tokenisation quirks of each family, through the DataModules --------------------------------
def test_special_tokens_per_family(family_checkpoints):  # noqa: F811
    models, data = family_checkpoints["models"], family_checkpoints["data"]

    def examples(family: str, kind: str) -> tuple[list[dict], object]:
        module = SFTDataModule(model=models[family], dataset=data["sft", kind], batch_size=1, chat_template=PLAIN_CHAT_TEMPLATE if family == "gpt2" and kind == "chat" else "auto", **SIZES)
        module.setup()
        return module.train_examples, module.tokenizer

    for family in FAMILIES:
        for kind in ("plain", "chat"):
            rows, tok = examples(family, kind)
            for ex in rows:
                prompt, completion = ex["prompt_ids"], ex["completion_ids"]
                assert completion[-1] == tok.eos_token_id and completion.count(tok.eos_token_id) == 1, (family, kind)
                # As at inference: Gemma's tokenizer adds a BOS to plain text and its template writes one (never
                # both); GPT-2's tokenizer adds none (its BOS is its EOS) nor does the template passed in; Qwen2 has none.
                if family == "gemma2":
                    assert prompt[0] == tok.bos_token_id and prompt.count(tok.bos_token_id) == 1, (kind, prompt)
                    assert tok.decode(prompt[:2]) != tok.decode([tok.bos_token_id] * 2)
                else:
                    assert tok.bos_token_id is None or tok.bos_token_id not in prompt, (family, kind, prompt)
                if kind == "plain":
                    assert prompt == tok(tok.decode(prompt, skip_special_tokens=True))["input_ids"], (family, prompt)
                if family == "qwen2" and kind == "chat":
                    assert tok.decode(prompt).startswith("<|im_start|>user\n") and tok.decode(prompt).endswith("<|im_start|>assistant\n")
                if family == "gemma2" and kind == "chat":
                    assert tok.convert_ids_to_tokens(prompt)[-2:] == ["<start_of_turn>", "model"]
                    assert tok.convert_ids_to_tokens(completion)[-2:] == ["<end_of_turn>", "<eos>"]


# ----- chat data with a tokenizer that has no chat template (item 3) -------------------------------
def test_gpt2_chat_data_without_template_is_one_message_naming_the_fixes(family_checkpoints, tmp_path, monkeypatch, capsys):  # noqa: F811
    """What a user sees: `python -m lit_align fit` (``cli_main``, in-process) on TRL conversational pairs with a GPT-2 checkpoint."""
    args = cli_args("lit_align.algorithms.DPO", family_checkpoints["models"]["gpt2"], "lit_align.data.pairwise.PairwiseDataModule", family_checkpoints["data"]["pairwise", "chat"], str(tmp_path))
    monkeypatch.chdir(tmp_path)
    code, _, err = cli_in_process(capsys, *args)
    assert code == 1, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    error = next(line for line in err.splitlines() if line.startswith("lit_align: error:"))
    assert "pairwise_chat.jsonl [train] row 0: the prompt is a list of chat messages" in error and "gpt2' has no chat template" in error
    for fix in ("tokenizer.chat_template", "data.init_args.chat_template: \"{%", "data.init_args.chat_template: never"):
        assert fix in error, (fix, error)


def test_chat_template_never_joins_turns_as_plain_text(family_checkpoints):  # noqa: F811
    models, data = family_checkpoints["models"], family_checkpoints["data"]
    module = PairwiseDataModule(model=models["gpt2"], dataset=data["pairwise", "chat"], batch_size=1, chat_template="never", **SIZES)
    module.setup()
    with open(data["pairwise", "chat"]) as f:
        rows = [json.loads(line) for line in f]
    prompts = {row["chosen"][0]["content"] for row in rows}
    assert {ex["prompt_text"] for ex in module.train_examples + module.val_examples} <= prompts  # the user turn, as plain text
    with pytest.raises(ConfigError, match=r"chat_template='always' renders every prompt as a chat turn, but the tokenizer of .*gpt2' has no chat template"):
        PairwiseDataModule(model=models["gpt2"], dataset=data["pairwise", "plain"], batch_size=1, chat_template="always", **SIZES).setup()
    # Plain data never needs a template.
    plain = UnpairedDataModule(model=models["gpt2"], dataset=data["unpaired", "plain"], batch_size=2, **SIZES)
    plain.setup()
    assert plain.train_examples
