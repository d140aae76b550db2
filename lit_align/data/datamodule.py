"""``AlignmentDataModule``: what every DataModule shares — loading, tokenising, reporting, loaders.

Subclasses say which columns they need (``required_columns``), how one row becomes an encoded
example (``encode_row``) and how examples become a typed batch (``collate``).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from datasets import Dataset
from lightning import LightningDataModule
from lightning.pytorch.utilities import rank_zero_info
from torch.utils.data import DataLoader

from lit_align.data.embedded import embedded_rows
from lit_align.data.sources import load_rows, select_columns
from lit_align.data.tokenize import ChatTemplateMode, DataError, DataReport, PromptCompletionEncoder, is_messages
from lit_align.modeling import is_embedded, load_tokenizer


def check_text(value: Any, where: str, report: DataReport, field: str) -> bool:
    """True when ``value`` is usable text or messages; counts and skips missing/empty values."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        report.drop(f"missing {field}")
        return False
    if isinstance(value, str):
        if not value.strip():
            report.drop(f"empty {field}")
            return False
        return True
    if is_messages(value):
        return True
    raise DataError(f"{where}: field {field!r} must be a string or a list of chat messages, got {type(value).__name__}: {value!r:.80}")


class AlignmentDataModule(LightningDataModule):
    """Base DataModule.

    Args:
        model: Model name/path whose tokenizer is used (linked from ``model.init_args.model`` by the
            CLI); for ``embedded:pairs`` it is also the model the pairs are sampled from.
        dataset: ``embedded:*`` (see ``lit_align.data.embedded``), a local .json/.jsonl/.parquet/.csv
            file, a ``save_to_disk`` folder, or a hub dataset name.
        split: Training split.
        val_split: Validation split; None holds out ``val_fraction`` of the training rows instead
            (embedded datasets always have a generated ``validation`` split).
        val_fraction: Share of training rows held out when ``val_split`` is None.
        subset: Hub dataset configuration name.
        data_files: Passed to ``datasets.load_dataset`` for hub/folder datasets.
        columns: Map from our column names to yours, e.g. ``{prompt: question}``.
        num_examples: Size of generated embedded training data (ignored for real datasets).
        num_val_examples: Size of generated embedded validation data.
        max_length: Longest prompt+completion in tokens.
        max_prompt_length: Longest prompt in tokens (cut from the left).
        chat_template: ``auto`` applies the tokenizer's chat template to message-list inputs only.
        batch_size: Training micro-batch size (pairs for pairwise data).
        eval_batch_size: Validation batch size (default: ``batch_size``).
        num_workers: DataLoader worker processes.
        seed: Seed for shuffling, held-out splits and generated data.
    """

    required_columns: tuple[str, ...] = ()
    embedded_default = "embedded:demonstrations"

    def __init__(
        self,
        model: str = "embedded:tiny",
        dataset: str | None = None,
        split: str = "train",
        val_split: str | None = None,
        val_fraction: float = 0.05,
        subset: str | None = None,
        data_files: str | list[str] | dict[str, str] | None = None,
        columns: dict[str, str] | None = None,
        num_examples: int = 2000,
        num_val_examples: int = 200,
        max_length: int = 128,
        max_prompt_length: int = 64,
        chat_template: ChatTemplateMode = "auto",
        batch_size: int = 16,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.model = model
        self.dataset = dataset or self.embedded_default
        self.split = split
        self.val_split = val_split
        self.val_fraction = val_fraction
        self.subset = subset
        self.data_files = data_files
        self.columns = columns
        self.num_examples = num_examples
        self.num_val_examples = num_val_examples
        self.max_length = max_length
        self.max_prompt_length = max_prompt_length
        self.chat_template = chat_template
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.seed = seed
        self.tokenizer = None
        self.reports: dict[str, DataReport] = {}
        self.train_examples: list[dict] = []
        self.val_examples: list[dict] = []
        self.val_rows: Dataset | None = None

    # ----- loading -----------------------------------------------------------------------------
    def _rows(self, split: str) -> Dataset:
        if is_embedded(self.dataset):
            n = self.num_examples if split == "train" else self.num_val_examples
            return embedded_rows(self.dataset, split, n, self.seed, model=self.model)
        return load_rows(self.dataset, split, self.subset, self.data_files)

    def prepare_data(self) -> None:
        # Runs on one process only: generate (and cache) embedded data before ranks read it.
        if is_embedded(self.dataset):
            self._rows("train"), self._rows("validation")

    def load_splits(self) -> tuple[Dataset, Dataset]:
        if is_embedded(self.dataset):
            return self._rows("train"), self._rows("validation")
        train = self._rows(self.split)
        if self.val_split is not None:
            return train, self._rows(self.val_split)
        if len(train) < 2:
            raise DataError(f"{self.dataset}: {len(train)} row(s) — too few to hold out a validation split; set val_split")
        held_out = train.train_test_split(test_size=max(1, round(self.val_fraction * len(train))), seed=self.seed)
        return held_out["train"], held_out["test"]

    # ----- encoding ----------------------------------------------------------------------------
    def encode_row(self, row: dict, where: str, report: DataReport) -> dict | None:
        raise NotImplementedError

    def collate(self, examples: list[dict]) -> Any:
        raise NotImplementedError

    def _encode(self, rows: Dataset, name: str) -> list[dict]:
        rows = select_columns(rows, self.required_columns, self.columns, f"{self.dataset} ({name})")
        report = DataReport(name=f"{self.dataset} [{name}]", total=len(rows))
        examples = []
        for index, row in enumerate(rows):
            example = self.encode_row(row, f"{self.dataset} [{name}] row {index}", report)
            if example is not None:
                examples.append(example)
        report.kept = len(examples)
        self.reports[name] = report
        rank_zero_info(f"lit_align: {report.summary()}")
        if not examples:
            raise DataError(f"{self.dataset} [{name}]: no usable examples left ({report.summary()}); check the columns and max_length")
        return examples

    def setup(self, stage: str | None = None) -> None:
        if self.tokenizer is not None:
            return
        self.tokenizer = load_tokenizer(self.model)
        self.encoder = PromptCompletionEncoder(self.tokenizer, self.max_length, self.max_prompt_length, self.chat_template)
        train_rows, self.val_rows = self.load_splits()
        self.train_examples = self._encode(train_rows, "train")
        self.val_examples = self._encode(self.val_rows, "validation")

    # ----- loaders -----------------------------------------------------------------------------
    def train_dataloader(self) -> DataLoader:
        generator = torch.Generator().manual_seed(self.seed)
        return DataLoader(self.train_examples, self.batch_size, shuffle=True, generator=generator, collate_fn=self.collate, num_workers=self.num_workers, drop_last=True)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_examples, self.eval_batch_size, shuffle=False, collate_fn=self.collate, num_workers=self.num_workers)

    def eval_prompts(self, n: int) -> list[tuple[str, list[int]]]:
        """Up to ``n`` held-out prompts as (rendered text, token ids) for sampling-based evaluation."""
        return [(ex["prompt_text"], ex["prompt_ids"]) for ex in self.val_examples[:n]]
