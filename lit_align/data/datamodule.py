"""``AlignmentDataModule``: what every DataModule shares — loading, tokenising, reporting, loaders.

Subclasses say which columns they need (``required_columns``), how one row becomes an encoded
example (``encode_row``, written with ``read_texts`` and ``encode_example`` from
``lit_align.data.encoding``) and how examples become a typed batch (``collate``).
"""

from __future__ import annotations

from typing import Any

import torch
from datasets import Dataset
from lightning import LightningDataModule
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch.utils.data import DataLoader

from lit_align.data.dedup import overlap, split_unique
from lit_align.data.embedded import embedded_rows
from lit_align.data.encoding import RowEncoding
from lit_align.data.samplers import ResumableBatchSampler, ResumableDataLoader
from lit_align.data.sources import load_rows
from lit_align.data.tokenize import (
    ChatTemplateMode,
    DataError,
    DataReport,
    PromptCompletionEncoder,
    check_chat_template,
    check_lengths,
    check_text,  # noqa: F401  (re-exported: the DataModules import it from here)
)
from lit_align.errors import ConfigError, check_range
from lit_align.data.model_limits import max_positions
from lit_align.modeling import is_embedded, load_tokenizer


def report_table(counts: dict[str, float]) -> str:
    """The data report's counts as a markdown table (TensorBoard renders it on its TEXT tab)."""
    return "\n".join(["| count | examples |", "|---|---|", *(f"| {key} | {value:g} |" for key, value in counts.items())])


class AlignmentDataModule(RowEncoding, LightningDataModule):
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
        chat_template: ``auto`` applies the tokenizer's chat template to message-list inputs only;
            ``always`` to plain-string prompts too (as a user turn); ``never`` joins message contents
            as plain text; any other value is a Jinja chat template used instead of the
            tokenizer's (and exported with it). Chat data with a tokenizer that has no template
            is an error naming these fixes.
        batch_size: Training micro-batch size (pairs for pairwise data).
        eval_batch_size: Validation batch size (default: ``batch_size``).
        num_workers: DataLoader worker processes.
        seed: Seed for shuffling, held-out splits and generated data.
        group_by_length: Batch training examples of similar length together (on by default): the
            examples are shuffled, cut into megabatches of 64 batches, each sorted by length and
            cut into batches, and the batch order shuffled again, all seeded by ``seed``
            (``lit_align.data.samplers``). Batches stay random but need little padding, so less
            compute is wasted on mixed lengths. Turn it off (``data.init_args.group_by_length=false``)
            for batches drawn uniformly at random, e.g. to reproduce a run from before this default.
    """

    required_columns: tuple[str, ...] = ()
    # Smallest usable (eval_)batch_size, and why when it is above 1 (appended to the error).
    min_batch_size: int = 1
    min_batch_size_reason: str = ""
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
        chat_template: ChatTemplateMode | str = "auto",
        batch_size: int = 16,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        seed: int = 0,
        group_by_length: bool = True,
    ) -> None:
        super().__init__()
        # Checked here, when the config is built, not after minutes of loading and tokenising.
        check_range(self, "val_fraction", val_fraction, 0, 1, low_open=True, high_open=True)
        check_range(self, "num_examples", num_examples, 1, integer=True)
        check_range(self, "num_val_examples", num_val_examples, 1, integer=True)
        check_lengths(self, max_length, max_prompt_length)
        check_chat_template(self, chat_template)
        for name, value in (("batch_size", batch_size), ("eval_batch_size", eval_batch_size)):
            try:
                check_range(self, name, value, self.min_batch_size, integer=True, allow_none=name == "eval_batch_size")
            except ConfigError as error:
                raise ConfigError(f"{error}{self.min_batch_size_reason}") from None
        check_range(self, "num_workers", num_workers, 0, integer=True)
        check_range(self, "seed", seed, 0, integer=True)
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
        self.group_by_length = group_by_length
        self.tokenizer = None
        self.reports: dict[str, DataReport] = {}
        self.duplicate_rows = self.duplicates_left_out = 0  # found when holding out validation rows
        self.train_examples: list[dict] = []
        self.val_examples: list[dict] = []
        self.val_rows: Dataset | None = None
        self._train_loader: ResumableDataLoader | None = None
        self._loader_state: dict[str, int] | None = None

    @property
    def embedded_task(self) -> bool:
        """True when the data is the embedded synthetic task, whose programmatic reward (the lexicon) is meaningful."""
        return is_embedded(self.dataset)

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
            validation = self._rows(self.val_split)
            try:
                shared = overlap(train, validation) if self.val_split != self.split else 0
            except UnicodeDecodeError:  # reported with its row by the encoding pass
                shared = 0
            if shared:
                rank_zero_warn(f"lit_align: {self.dataset}: {shared} of {len(validation)} rows of split {self.val_split!r} also appear in {self.split!r}; validation then partly measures memorisation. Remove them from one split.")
            return train, validation
        if len(train) < 2:
            raise DataError(f"{self.dataset}: {len(train)} row(s) — too few to hold out a validation split; set val_split")
        # By distinct row: copies of one row never sit on both sides (lit_align.data.dedup).
        try:
            held = split_unique(train, self.val_fraction, self.seed)
        except UnicodeDecodeError:  # Arrow decodes lazily: split by row; the encoding pass names the bad row
            held = split_unique(train, self.val_fraction, self.seed, by_row=True)
        if not len(held.validation):
            raise DataError(f"{self.dataset}: all {len(train)} rows are copies of one row, so no distinct row is left to validate on; remove the duplicates or set val_split")
        self.duplicate_rows, self.duplicates_left_out = held.duplicates, held.left_out
        if held.duplicates:
            rank_zero_info(
                f"lit_align: {self.dataset}: {held.duplicates} duplicate row(s) (identical to an earlier row). The validation split "
                f"holds distinct rows, none also in training; {held.left_out} extra copies of held-out rows were left out of both splits, "
                "and duplicates kept for training count once per copy."
            )
        return held.train, held.validation

    def collate(self, examples: list[dict]) -> Any:
        raise NotImplementedError

    def setup(self, stage: str | None = None) -> None:
        if self.tokenizer is not None:
            return
        self.tokenizer = load_tokenizer(self.model)
        self.encoder = PromptCompletionEncoder(self.tokenizer, self.max_length, self.max_prompt_length, self.chat_template, name=self.model)
        self._check_model_fits()
        train_rows, self.val_rows = self.load_splits()
        self.train_examples = self._encode(train_rows, "train")
        self.val_examples = self._encode(self.val_rows, "validation")
        if len(self.train_examples) < self.batch_size:
            raise DataError(
                f"{self.dataset} [train]: {len(self.train_examples)} usable example(s), fewer than batch_size={self.batch_size}, "
                "so no full training batch exists; lower data.init_args.batch_size or add data."
            )
        self._log_reports()

    def _check_model_fits(self) -> None:
        # A sequence longer than the model's position table fails deep inside the embedding lookup.
        limit = max_positions(self.model)
        if limit is not None and self.max_length > limit:
            raise DataError(f"max_length={self.max_length} exceeds the model's max_position_embeddings={limit}; set data.init_args.max_length <= {limit}")

    # ----- reporting ---------------------------------------------------------------------------
    def report_metrics(self) -> dict[str, float]:
        """What tokenisation kept, truncated and dropped, per split, as ``data/<split>/...`` scalars."""
        metrics = {key: value for split, report in self.reports.items() for key, value in report.metrics(split).items()}
        if self.duplicate_rows:
            metrics.update({"data/duplicate_rows": self.duplicate_rows, "data/duplicates_left_out": self.duplicates_left_out})
        return metrics

    def _log_reports(self) -> None:
        trainer = self.trainer
        if trainer is None or not trainer.loggers:
            return
        counts = self.report_metrics()
        for logger in trainer.loggers:
            # TensorBoard: one text panel, not a page of one-point charts in front of the training curves.
            if isinstance(logger, TensorBoardLogger):
                logger.experiment.add_text("data/report", report_table(counts), 0)
            else:
                logger.log_metrics(counts, step=0)
            logger.log_hyperparams({"data_report": " | ".join(r.summary() for r in self.reports.values())})

    def teardown(self, stage: str) -> None:
        # Repeat the counts at the end of fit, where they are not scrolled away by training logs.
        if stage == "fit" and self.reports:
            for report in self.reports.values():
                rank_zero_info(f"lit_align: data report: {report.summary()}")

    # ----- loaders -----------------------------------------------------------------------------
    def train_dataloader(self) -> DataLoader:
        trainer = self.trainer
        sampler = ResumableBatchSampler(
            [self.example_length(ex) for ex in self.train_examples],
            self.batch_size,
            seed=self.seed,
            group_by_length=self.group_by_length,
            num_replicas=trainer.world_size if trainer is not None else 1,
            rank=trainer.global_rank if trainer is not None else 0,
        )
        # An explicit generator keeps DataLoader iteration from drawing on the global RNG, which a
        # resumed run would otherwise see in a different state than an uninterrupted one.
        self._train_loader = ResumableDataLoader(self.train_examples, sampler, collate_fn=self.collate, num_workers=self.num_workers, generator=torch.Generator().manual_seed(self.seed))
        if self._loader_state is not None:
            self._train_loader.load_state_dict(self._loader_state)
        return self._train_loader

    # The loader position travels in the DataModule's checkpoint entry: Lightning builds the train
    # loader early (estimated_stepping_batches) and then skips restoring its own loader state.
    def state_dict(self) -> dict[str, Any]:
        return {"train_loader": self._train_loader.state_dict()} if self._train_loader is not None else {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._loader_state = state_dict.get("train_loader")
        if self._loader_state is not None and self._train_loader is not None:
            self._train_loader.load_state_dict(self._loader_state)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_shard(), self.eval_batch_size, shuffle=False, collate_fn=self.collate, num_workers=self.num_workers, generator=torch.Generator().manual_seed(self.seed))

    def val_shard(self) -> list[dict]:
        """This rank's validation examples: every ``world_size``-th one when Lightning does not shard.

        The multi-device presets turn Lightning's sampler injection off (the train sampler shards by
        rank itself), which would otherwise leave every rank validating the whole set. Each example
        is seen by exactly one rank, with no padding duplicates (unlike DistributedSampler), so the
        synced sum/count metrics are exact over the set.
        """
        trainer = self.trainer
        world_size = trainer.world_size if trainer is not None else 1
        lightning_shards = getattr(getattr(trainer, "_accelerator_connector", None), "use_distributed_sampler", True)
        if world_size == 1 or lightning_shards:
            return self.val_examples
        return self.val_examples[trainer.global_rank :: world_size]

    def eval_prompts(self, n: int) -> list[tuple[str, list[int]]]:
        """Up to ``n`` held-out prompts as (rendered text, token ids) for sampling-based evaluation."""
        # Plain-text rows have an empty prompt (no ids at all without a BOS): nothing to sample from.
        return [(ex["prompt_text"], ex["prompt_ids"]) for ex in self.val_examples if ex["prompt_ids"]][:n]
