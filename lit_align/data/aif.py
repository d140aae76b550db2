"""AI feedback (AIF), the second stage of Zephyr (arXiv 2310.16944, Sec. 3 and Fig. 2).

A pool of models answers every prompt (K completions), a judge scores each completion, and each
prompt becomes one preference pair: chosen = the top-scored completion, rejected = a random one of
the others (``select_pair``). The pairs are written with ``DatasetDict.save_to_disk`` and load back
through ``PairwiseDataModule(dataset=<that folder>, val_split="validation")``.

Columns: ``prompt, chosen, rejected, score_chosen, score_rejected, model_chosen, model_rejected``
plus every completion of the prompt (``completions, scores, models``) so the ranking can be audited
or re-binarised with another rule.
"""

from __future__ import annotations

import json
import os
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from datasets import Dataset, DatasetDict
from tqdm.auto import tqdm

from lit_align.data.embedded import embedded_rows
from lit_align.data.feedback import select_pair
from lit_align.data.sources import load_rows, select_columns
from lit_align.data.tokenize import ChatTemplateMode, DataError, Messages, PromptCompletionEncoder, check_chat_template, is_messages
from lit_align.errors import ConfigError, check_range
from lit_align.online.generation import sample_completions
from lit_align.modeling import is_embedded, load_causal_lm, load_tokenizer
from lit_align.rewards import LexiconSentimentReward, RewardFunction
from lit_align.online.scoring import decode_completion
from lit_align.utils.dtypes import check_dtype

Prompt = str | Messages


@dataclass
class AIFReport:
    """What AIF kept and dropped, and which pool member wrote the chosen/rejected sides."""

    prompts: int = 0
    pairs: int = 0
    dropped: Counter = field(default_factory=Counter)
    chosen_by_model: Counter = field(default_factory=Counter)
    rejected_by_model: Counter = field(default_factory=Counter)

    def summary(self) -> str:
        parts = [f"AIF: {self.pairs} pairs from {self.prompts} prompts"]
        parts += [f"dropped {n} ({reason})" for reason, n in sorted(self.dropped.items())]
        parts.append(f"chosen written by {dict(self.chosen_by_model)}; rejected by {dict(self.rejected_by_model)}")
        return "; ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {"prompts": self.prompts, "pairs": self.pairs, "dropped": dict(self.dropped), "chosen_by_model": dict(self.chosen_by_model), "rejected_by_model": dict(self.rejected_by_model)}


def judge_text(prompt: Prompt) -> str:
    """The prompt as plain text for the judge (a judge with a chat template applies its own)."""
    return "\n".join(m["content"] for m in prompt) if is_messages(prompt) else prompt


def resolve_device(device: str) -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else torch.device(device)


def sample_pool(
    models: Sequence[str],
    prompts: Sequence[Prompt],
    samples_per_model: int = 1,
    max_new_tokens: int = 24,
    temperature: float = 1.0,
    max_prompt_length: int = 64,
    chat_template: ChatTemplateMode = "auto",
    batch_size: int = 64,
    seed: int = 0,
    dtype: str | None = None,
    device: str = "auto",
    progress: bool = True,
) -> tuple[list[list[str]], list[str], list[int]]:
    """Completions of every pool member for every prompt.

    Returns ``(completions, slot_models, kept)``: ``completions[j][s]`` is the decoded text of slot
    ``s`` for prompt ``kept[j]``, written by ``slot_models[s]``. Slots follow the pool order, so a
    model listed twice fills two slots (it is loaded once). Each model has its own tokenizer and
    encodes the prompt itself; a prompt longer than ``max_prompt_length`` for any model is skipped
    rather than cut (a truncated instruction would be judged unfairly).
    """
    slot_models = [name for name in models for _ in range(samples_per_model)]
    unique = list(dict.fromkeys(models))
    encoded = {}
    too_long: set[int] = set()
    for name in unique:
        tokenizer = load_tokenizer(name)
        encoder = PromptCompletionEncoder(tokenizer, max_prompt_length + 1, max_prompt_length, chat_template)
        ids = [encoder.encode_prompt(p) for p in prompts]
        too_long |= {i for i, x in enumerate(ids) if len(x) > max_prompt_length}
        encoded[name] = (tokenizer, ids)
    kept = [i for i in range(len(prompts)) if i not in too_long]
    completions = [[""] * len(slot_models) for _ in kept]
    target = resolve_device(device)
    for index, name in enumerate(tqdm(unique, desc="AIF: pool models", disable=not progress)):
        tokenizer, ids = encoded[name]
        model = load_causal_lm(name, tokenizer, dtype=dtype).to(target)
        slots = [s for s, m in enumerate(slot_models) if m == name]
        # One seed per pool member: two members never share a random stream.
        samples = sample_completions(model, tokenizer, [ids[i] for i in kept], len(slots), max_new_tokens, temperature, batch_size, seed=seed + index, progress=progress)
        for row, per_prompt in zip(completions, samples):
            for slot, sample in zip(slots, per_prompt):
                row[slot] = decode_completion(tokenizer, sample)
        del model
    return completions, slot_models, kept


def judge_pool(judge: RewardFunction, prompts: Sequence[Prompt], completions: Sequence[Sequence[str]], batch_size: int = 256, progress: bool = True) -> list[list[float]]:
    """``scores[j][s]`` = judge(prompt j, completion s), scored in flat batches."""
    flat = [(judge_text(p), c) for p, row in zip(prompts, completions) for c in row]
    scores: list[float] = []
    for start in tqdm(range(0, len(flat), batch_size), desc="AIF: judging", disable=not progress):
        chunk = flat[start : start + batch_size]
        scores += judge([p for p, _ in chunk], [c for _, c in chunk]).float().tolist()
    width = len(completions[0]) if completions else 0
    return [scores[j * width : (j + 1) * width] for j in range(len(completions))]


def binarize(prompt: Prompt, completions: Sequence[str], scores: Sequence[float], slot_models: Sequence[str], rng: random.Random) -> dict[str, Any] | str:
    """One AIF row by Zephyr's rule, or the reason the prompt yields no pair.

    Empty completions take no part (a pair with an empty side is dropped by every DataModule);
    ties for the top go to the earliest pool slot; rejected is drawn among strictly lower scores
    and never repeats the chosen text.
    """
    usable = [i for i, c in enumerate(completions) if c]
    if len(usable) < 2:
        return "fewer than two non-empty completions"
    pick = select_pair([scores[i] for i in usable], rng, keys=[completions[i] for i in usable])
    if pick is None:
        return "all completions scored the same"
    chosen, rejected = usable[pick[0]], usable[pick[1]]
    return {
        "prompt": prompt,
        "chosen": completions[chosen],
        "rejected": completions[rejected],
        "score_chosen": float(scores[chosen]),
        "score_rejected": float(scores[rejected]),
        "model_chosen": slot_models[chosen],
        "model_rejected": slot_models[rejected],
        "completions": list(completions),
        "scores": [float(s) for s in scores],
        "models": list(slot_models),
    }


def build_aif_dataset(prompts: dict[str, Sequence[Prompt]], models: Sequence[str], judge: RewardFunction, seed: int = 0, chat_template: ChatTemplateMode = "auto", progress: bool = True, **sampling: Any) -> tuple[DatasetDict, AIFReport]:
    """Sample, judge and binarise each split's prompts (``{"train": [...], "validation": [...]}``).

    ``sampling`` goes to :func:`sample_pool`. The rejected side is drawn with a per-prompt RNG
    seeded by (``seed``, split, index), so a row does not change when other rows are dropped.
    """
    # Checked before any model is loaded or sampled.
    pool = len(models) * sampling.get("samples_per_model", 1)
    if pool < 2:
        raise ConfigError(f"AIF needs K >= 2 completions per prompt; the pool gives {pool} ({len(models)} model(s) x samples_per_model={sampling.get('samples_per_model', 1)}); add models or raise samples_per_model")
    report, splits = AIFReport(), {}
    for split, split_prompts in prompts.items():
        completions, slot_models, kept = sample_pool(models, split_prompts, seed=seed, chat_template=chat_template, progress=progress, **sampling)
        kept_prompts = [split_prompts[i] for i in kept]
        scores = judge_pool(judge, kept_prompts, completions, progress=progress)
        report.prompts += len(split_prompts)
        report.dropped["prompt longer than max_prompt_length"] += len(split_prompts) - len(kept)
        rows = []
        for index, prompt, texts, row_scores in zip(kept, kept_prompts, completions, scores):
            if chat_template == "always" and isinstance(prompt, str):
                # Store the prompt as the messages the pool saw, so DPO applies the same template.
                prompt = [{"role": "user", "content": prompt}]
            row = binarize(prompt, texts, row_scores, slot_models, random.Random(f"{seed}:{split}:{index}"))
            if isinstance(row, str):
                report.dropped[row] += 1
                continue
            rows.append(row)
            report.chosen_by_model[row["model_chosen"]] += 1
            report.rejected_by_model[row["model_rejected"]] += 1
        if not rows:
            raise DataError(f"AIF [{split}]: no pairs left ({report.summary()}); use more prompts or a more varied pool")
        report.pairs += len(rows)
        splits[split] = Dataset.from_list(rows)
    report.dropped = Counter({k: v for k, v in report.dropped.items() if v})
    return DatasetDict(splits), report


def load_prompts(dataset: str, split: str, num_prompts: int | None, prompt_column: str = "prompt", subset: str | None = None, seed: int = 0) -> list[Prompt]:
    """Up to ``num_prompts`` non-empty prompts of one split (``embedded:*`` datasets, files, hub names)."""
    if is_embedded(dataset):
        rows = embedded_rows(dataset, split, num_prompts or 1000, seed)
    else:
        rows = load_rows(dataset, split, subset)
    rows = select_columns(rows, ["prompt"], {"prompt": prompt_column}, f"{dataset} ({split})")
    if num_prompts is not None:
        rows = rows.select(range(min(num_prompts, len(rows))))
    return [p for p in rows["prompt"] if (is_messages(p) and p) or (isinstance(p, str) and p.strip())]


def run_aif(
    models: list[str],
    out: str,
    judge: RewardFunction | None = None,
    prompts: str = "embedded:prompts",
    split: str = "train",
    val_split: str | None = "validation",
    val_fraction: float = 0.05,
    prompt_column: str = "prompt",
    subset: str | None = None,
    num_prompts: int | None = 1000,
    num_val_prompts: int | None = 100,
    samples_per_model: int = 1,
    max_new_tokens: int = 24,
    temperature: float = 1.0,
    max_prompt_length: int = 64,
    chat_template: ChatTemplateMode = "auto",
    batch_size: int = 64,
    dtype: str | None = None,
    device: str = "auto",
    seed: int = 0,
    progress: bool = True,
) -> DatasetDict:
    """Zephyr's AI-feedback step: pool completions -> judge scores -> (chosen, rejected) pairs on disk.

    Args:
        models: The pool: model names/paths (``embedded:tiny``, ``save_pretrained`` folders, hub
            names). K = len(models) * samples_per_model completions per prompt; list a model twice
            to give it two slots. Zephyr/UltraFeedback: 4 completions from 4 different models.
        out: Folder for ``DatasetDict.save_to_disk`` (splits ``train``, ``validation``) and ``aif_report.json``.
        judge: Scores (prompt, completion) by ``class_path``: ``lit_align.rewards.LexiconSentimentReward``
            (default, the embedded task's ground truth), ``lit_align.rewards.HFClassifierReward`` (an HF
            reward model), or any ``RewardFunction`` of yours.
        prompts: Prompt source: ``embedded:prompts``, a local file / ``save_to_disk`` folder, or a hub dataset.
        split: Split the training prompts come from.
        val_split: Split of the validation prompts; None holds out ``val_fraction`` of the pairs instead.
        val_fraction: Share of pairs held out for validation when ``val_split`` is None.
        prompt_column: Name of the prompt column in ``prompts`` (a string or a chat message list).
        subset: Hub dataset configuration name.
        num_prompts: Use at most this many training prompts (None: all).
        num_val_prompts: At most this many validation prompts (None: all).
        samples_per_model: Completions per prompt from each listed model.
        max_new_tokens: Generation budget per completion.
        temperature: Sampling temperature (pure ancestral sampling, no top-k/top-p).
        max_prompt_length: Prompts longer than this (in any pool model's tokens) are skipped.
        chat_template: ``auto`` templates message-list prompts only; ``always`` also wraps string
            prompts as a user turn (chat models) and stores them as messages for the DPO stage.
        batch_size: Generation batch size (KV-cache sampling).
        dtype: Load pool models in this dtype (e.g. ``bfloat16``).
        device: ``auto`` (CUDA when available), ``cpu``, ``cuda:0``, ...
        seed: Seeds sampling and the random choice of the rejected completion.
        progress: Show progress bars.
    """
    for name, value, low, kind in (
        ("samples_per_model", samples_per_model, 1, "int"), ("max_new_tokens", max_new_tokens, 1, "int"), ("max_prompt_length", max_prompt_length, 1, "int"),
        ("batch_size", batch_size, 1, "int"), ("num_prompts", num_prompts, 1, "int"), ("num_val_prompts", num_val_prompts, 1, "int"), ("seed", seed, 0, "int"),
    ):  # fmt: skip
        check_range("run_aif", name, value, low, integer=kind == "int", allow_none=name.startswith("num_"))
    check_range("run_aif", "temperature", temperature, 0, low_open=True)
    check_range("run_aif", "val_fraction", val_fraction, 0, 1, low_open=True, high_open=True)
    check_chat_template("run_aif", chat_template)
    check_dtype("run_aif", dtype)
    if judge is None and not is_embedded(prompts):
        # The default judge is the embedded task's lexicon: on other prompts it scores ~0 and pairs would be random.
        raise ConfigError(
            f"run_aif: no judge given, and the prompts ({prompts}) are not the embedded task, whose lexicon (the default judge) "
            "would score their completions as ~0 and pick chosen/rejected at random. Give one, e.g. "
            "--judge lit_align.rewards.HFClassifierReward --judge.model <reward model>, or any RewardFunction by class_path."
        )
    judge = judge or LexiconSentimentReward()
    sources = {"train": load_prompts(prompts, split, num_prompts, prompt_column, subset, seed)}
    if val_split is not None:
        sources["validation"] = load_prompts(prompts, val_split, num_val_prompts, prompt_column, subset, seed)
    sampling = dict(samples_per_model=samples_per_model, max_new_tokens=max_new_tokens, temperature=temperature, max_prompt_length=max_prompt_length, batch_size=batch_size, dtype=dtype, device=device)
    pairs, report = build_aif_dataset(sources, models, judge, seed, chat_template, progress, **sampling)
    if val_split is None:
        held_out = pairs["train"].train_test_split(test_size=max(1, round(val_fraction * len(pairs["train"]))), seed=seed)
        pairs = DatasetDict({"train": held_out["train"], "validation": held_out["test"]})
    pairs.save_to_disk(out)
    with open(os.path.join(out, "aif_report.json"), "w") as f:
        json.dump({"report": report.to_dict(), "models": list(models), "judge": type(judge).__qualname__, "prompts": prompts, "samples_per_model": samples_per_model, "seed": seed}, f, indent=1)
    print(f"lit_align: {report.summary()}; wrote {out}")
    return pairs
