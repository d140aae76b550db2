"""Unpaired binary feedback for KTO: rows ``prompt, completion, label`` (desirable or not).

Also the converter from pairwise data (chosen -> desirable, rejected -> undesirable) with optional
subsampling to a desirable:undesirable ratio, since the KTO paper studies strongly imbalanced data.
"""

from __future__ import annotations

import math
import random
from typing import Any

import torch
from datasets import Dataset
from lightning.pytorch.utilities import rank_zero_info

from lit_align.data.batches import UnpairedBatch
from lit_align.data.collate import sequences_with_mask
from lit_align.data.datamodule import AlignmentDataModule
from lit_align.data.sources import select_columns
from lit_align.data.tokenize import DataError, DataReport
from lit_align.errors import check_range

PAIR_COLUMNS = ("chosen", "rejected")


def unpair(rows: Dataset) -> Dataset:
    """Pairwise rows (``prompt``?, ``chosen``, ``rejected``) -> unpaired rows ``prompt, completion, label``.

    Each pair gives two rows, chosen (label True) then rejected (label False), interleaved so an
    unshuffled split still mixes both kinds. Without a ``prompt`` column the prompt is None and the
    completion keeps the whole conversation (the encoder splits off the last assistant turn).
    """

    def convert(batch: dict[str, list]) -> dict[str, list]:
        n = len(batch["chosen"])
        prompts = batch.get("prompt", [None] * n)
        out: dict[str, list] = {"prompt": [], "completion": [], "label": []}
        for prompt, chosen, rejected in zip(prompts, batch["chosen"], batch["rejected"]):
            out["prompt"] += [prompt, prompt]
            out["completion"] += [chosen, rejected]
            out["label"] += [True, False]
        return out

    return rows.map(convert, batched=True, remove_columns=rows.column_names)


def ratio_subsample(labels: list[bool], desirable_ratio: float, seed: int = 0) -> list[int]:
    """Indices (in order) that keep n_D / n_U as close to ``desirable_ratio`` as one side's size allows.

    Only the over-represented side is subsampled (uniformly, seeded); nothing is duplicated.
    E.g. ratio 0.1 on 1000 + 1000 examples keeps all 1000 undesirable and 100 desirable.
    """
    check_range("ratio_subsample", "desirable_ratio", desirable_ratio, 0, low_open=True)
    desirable = [i for i, label in enumerate(labels) if label]
    undesirable = [i for i, label in enumerate(labels) if not label]
    if not desirable or not undesirable:
        return list(range(len(labels)))  # one kind only: no ratio to set
    rng = random.Random(seed)
    if len(desirable) > desirable_ratio * len(undesirable):
        desirable = rng.sample(desirable, max(1, round(desirable_ratio * len(undesirable))))
    else:
        undesirable = rng.sample(undesirable, max(1, round(len(desirable) / desirable_ratio)))
    return sorted(desirable + undesirable)


def parse_label(value: Any, where: str) -> bool | None:
    """True/False from a bool (or 0/1); None for a missing value; DataError for anything else."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    raise DataError(
        f"{where}: field 'label' must be a boolean (true = desirable, false = undesirable) or 0/1, "
        f"got {type(value).__name__} {value!r:.40}; convert the column to booleans"
    )


class UnpairedDataModule(AlignmentDataModule):
    """Rows ``prompt, completion, label`` (TRL's KTO format): ``label`` true for a desirable
    completion, false for an undesirable one; text or chat messages (``completion`` may be the
    whole conversation when ``prompt`` is absent). Pairwise data is unpaired on the fly.

    Each batch also carries mismatched (prompt, completion) pairs for KTO's reference point z0,
    so ``batch_size`` must be at least 2. Default dataset: ``embedded:pairs``, unpaired.

    Args:
        from_pairs: Treat the dataset as pairwise (``chosen``/``rejected``) and unpair it
            (chosen -> desirable, rejected -> undesirable); None decides from the columns.
        desirable_ratio: Subsample one side of the training split to n_desirable / n_undesirable
            = this value (e.g. 0.1 keeps one desirable example per ten undesirable ones), to
            study imbalanced feedback as the KTO paper does; None keeps every example.
        kl_shift: The rotation k of the mismatched pairs for z0 (prompt i with completion i - k of the
            batch). None (default) takes k = 1 unless that pairs a prompt with itself, as in
            unpaired-from-pairwise data where both halves of a pair sit side by side, and then the
            smallest k that never does (2 there; ``mismatch_shift``). 1 always shifts by one as TRL's
            KTOTrainer does (reproduces it exactly, sibling prompts included). A batch with at most
            k rows shifts by k mod B, or 1 when that is 0.
        **kwargs: See ``AlignmentDataModule``.
    """

    required_columns = ("completion", "label")
    min_batch_size = 2
    min_batch_size_reason = ": KTO estimates its reference point from mismatched pairs within a batch, so a batch needs two examples"
    embedded_default = "embedded:pairs"

    def __init__(self, from_pairs: bool | None = None, desirable_ratio: float | None = None, kl_shift: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        check_range(self, "desirable_ratio", desirable_ratio, 0, low_open=True, allow_none=True)
        check_range(self, "kl_shift", kl_shift, 1, integer=True, allow_none=True)
        self.from_pairs = from_pairs
        self.desirable_ratio = desirable_ratio
        self.kl_shift = kl_shift

    def _is_pairwise(self, rows: Dataset) -> bool:
        if self.from_pairs is not None:
            return self.from_pairs
        theirs = lambda ours: (self.columns or {}).get(ours, ours)  # noqa: E731
        return all(theirs(c) in rows.column_names for c in PAIR_COLUMNS) and theirs("label") not in rows.column_names

    def select_rows(self, rows: Dataset, name: str) -> Dataset:
        try:
            if self._is_pairwise(rows):
                return unpair(select_columns(rows, PAIR_COLUMNS, self.columns, f"{self.dataset} ({name})"))
            return super().select_rows(rows, name)
        except DataError as error:
            if self.from_pairs is None:
                raise
            # A forced layout that the columns contradict: say which setting forced it.
            layout = "pairs (chosen/rejected)" if self.from_pairs else "unpaired rows (completion/label)"
            raise DataError(f"{error} data.init_args.from_pairs={self.from_pairs} reads the data as {layout}; set from_pairs: null to detect the layout from the columns.") from None

    def _encode(self, rows: Dataset, name: str) -> list[dict]:
        examples = super()._encode(rows, name)
        if name != "train" or self.desirable_ratio is None:
            return examples
        keep = ratio_subsample([ex["label"] for ex in examples], self.desirable_ratio, self.seed)
        report = self.reports[name]
        report.dropped[f"subsampled to desirable_ratio={self.desirable_ratio}"] += len(examples) - len(keep)
        report.kept = len(keep)
        rank_zero_info(f"lit_align: {report.summary()}")
        return [examples[i] for i in keep]

    def encode_row(self, row: dict, where: str, report: DataReport) -> dict | None:
        label = parse_label(row.get("label"), where)
        if label is None:
            report.drop("missing label")
            return None
        texts = self.read_texts(row, ("completion",), where, report)
        if texts is None:
            return None
        prompt, (completion,) = texts
        example = self.encode_example(prompt, {"completion": completion}, report, label=label)
        if example is not None:
            # What this row lends to another prompt's mismatched pair: its completion uncut, as TRL
            # builds KL rows (the cut that fit it to this row's own prompt does not apply there; the
            # KL row is cut to max_length in collate). Stored only where the two differ.
            full = self.encoder.encode_completion(prompt, completion)
            if len(full) != len(example["completion_ids"]):
                example["lent_completion"] = full
        return example

    def eval_prompts(self, n: int) -> list[tuple[str, list[int]]]:
        # Unpaired pairwise data holds each prompt twice: take distinct prompts, so sampled evaluation
        # sees the same n prompts as pairwise methods on the same pairs (a like-for-like comparison).
        distinct: dict[str, list[int]] = {}
        for ex in self.val_examples:
            distinct.setdefault(ex["prompt_text"], ex["prompt_ids"])
        return list(distinct.items())[:n]

    def label_counts(self) -> tuple[int, int]:
        """(n_desirable, n_undesirable) in the training split, for KTO's loss-weight check."""
        desirable = sum(ex["label"] for ex in self.train_examples)
        return desirable, len(self.train_examples) - desirable

    def collate(self, examples: list[dict]) -> UnpairedBatch:
        prompts = [ex["prompt_ids"] for ex in examples]
        completions = [ex["completion_ids"] for ex in examples]
        shift = mismatch_shift(prompts, self.kl_shift)
        kl_prompts, kl_completions = [], []
        if shift:
            kl_prompts = prompts
            # Row i - k lends its whole completion, then the KL row is cut to max_length (TRL's order):
            # lending the copy already cut to fit row i - k's own prompt would shorten KL rows whose
            # prompt is shorter than the lender's, and shift z0 (issue 23 item 7).
            lent = [ex.get("lent_completion", ex["completion_ids"]) for ex in examples]
            kl_completions = [lent[(i - shift) % len(examples)][: max(1, self.max_length - len(p))] for i, p in enumerate(prompts)]
        tensors = sequences_with_mask(prompts + kl_prompts, completions + kl_completions, self.tokenizer.pad_token_id)
        return UnpairedBatch(*tensors, labels=torch.tensor([ex["label"] for ex in examples], dtype=torch.bool))


def mismatch_shift(prompts: list[list[int]], fixed: int | None = None) -> int:
    """The rotation k in [1, B) for the mismatched pairs (prompt i, completion (i - k) mod B).

    k = 1 is the authors' choice (completion i-1 with prompt i); any k in [1, B) keeps every
    completion away from its own example, for odd B too. Unpaired-from-pairwise data holds the
    same prompt twice (its chosen and its rejected side), so the smallest k that also never
    meets an identical prompt is taken when one exists. ``fixed`` (the ``kl_shift`` setting) is
    used as given instead (mod B; 1 when that is 0). Returns 0 when B < 2: no pair exists.
    """
    n = len(prompts)
    if n < 2:
        return 0
    if fixed is not None:
        return fixed % n or 1
    for k in range(1, n):
        if all(prompts[i] != prompts[(i - k) % n] for i in range(n)):
            return k
    return 1
