"""Training batch order: seeded per epoch, resumable mid-epoch, optionally grouped by length.

Lightning checkpoints any train DataLoader that has ``state_dict``/``load_state_dict`` (its
``_Stateful`` protocol; see ``FitLoop.on_save_checkpoint``). :class:`ResumableDataLoader` stores
the epoch and how many batches it has handed to the trainer, and on resume skips exactly those
(in the sampler, so skipped batches are never loaded or collated). Counting happens where batches
leave the DataLoader, not in the sampler: worker processes pull indices ahead of time. Lightning's
data fetcher does not prefetch from a loader with a length, so "handed out" equals "trained on"
(``tests/test_resume.py`` checks this against an uninterrupted run).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch.utils.data import DataLoader, Sampler


class ResumableBatchSampler(Sampler[list[int]]):
    """Batches of indices; the order of epoch ``e`` depends only on ``(seed, e)``.

    Args:
        lengths: Token length of each example (its longest padded row), used by ``group_by_length``.
        batch_size: Examples per batch on each rank.
        seed: Shuffling seed.
        drop_last: Drop the incomplete final batch (training default: every step sees a full batch).
        group_by_length: Put examples of similar length in the same batch, so dynamic padding wastes
            little compute. Examples are shuffled, cut into "megabatches" of ``bucket_batches``
            batches, sorted by length inside each megabatch and batched; the batch order is then
            shuffled again, so the length of consecutive batches is random.
        bucket_batches: Batches per megabatch: larger groups lengths more tightly but makes
            batches less random.
        num_replicas: Number of data-parallel ranks; each step takes ``batch_size * num_replicas``
            examples and rank ``r`` gets every ``num_replicas``-th of them (similar lengths across ranks).
        rank: This process's rank.
    """

    def __init__(
        self,
        lengths: Sequence[int],
        batch_size: int,
        seed: int = 0,
        drop_last: bool = True,
        group_by_length: bool = False,
        bucket_batches: int = 64,
        num_replicas: int = 1,
        rank: int = 0,
    ) -> None:
        if isinstance(lengths, Sampler):
            # Lightning tries this when it injects a DistributedSampler; we shard by rank ourselves.
            raise TypeError("ResumableBatchSampler shards batches across ranks itself: set `trainer.use_distributed_sampler: false` for multi-device runs")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.lengths = list(lengths)
        self.batch_size = batch_size
        self.seed = seed
        self.drop_last = drop_last
        self.group_by_length = group_by_length
        self.bucket_batches = bucket_batches
        self.num_replicas = num_replicas
        self.rank = rank
        self.epoch = 0
        self.skip = 0  # batches to skip at the start of the next iteration (set on resume)

    def set_epoch(self, epoch: int) -> None:
        """Called by Lightning at the start of every epoch (also when resuming mid-epoch)."""
        self.epoch = epoch

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        """All batches of ``epoch`` for this rank, in order."""
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        order = torch.randperm(len(self.lengths), generator=generator).tolist()
        per_step = self.batch_size * self.num_replicas
        if self.group_by_length:
            chunk = per_step * self.bucket_batches
            order = [i for start in range(0, len(order), chunk) for i in sorted(order[start : start + chunk], key=self.lengths.__getitem__, reverse=True)]
        end = len(order) // per_step * per_step if self.drop_last else len(order)
        steps = [order[start : start + per_step] for start in range(0, end, per_step)]
        if self.group_by_length:
            # Sorted megabatches would otherwise feed long batches in runs (bursty memory, biased steps).
            steps = [steps[i] for i in torch.randperm(len(steps), generator=generator).tolist()]
        return [step[self.rank :: self.num_replicas] for step in steps]

    def __len__(self) -> int:
        per_step = self.batch_size * self.num_replicas
        return len(self.lengths) // per_step if self.drop_last else -(-len(self.lengths) // per_step)

    def __iter__(self) -> Iterator[list[int]]:
        skip, self.skip = self.skip, 0
        yield from self.epoch_batches(self.epoch)[skip:]


class ResumableDataLoader(DataLoader):
    """A DataLoader over a :class:`ResumableBatchSampler` whose position is saved in checkpoints."""

    def __init__(self, dataset: Any, batch_sampler: ResumableBatchSampler, **kwargs: Any) -> None:
        super().__init__(dataset, batch_sampler=batch_sampler, **kwargs)
        self._epoch = batch_sampler.epoch
        self._consumed = 0
        self._pending: dict[str, int] | None = None

    def __iter__(self) -> Iterator[Any]:
        # A generator: its body runs at the first next(), i.e. after Lightning's set_epoch().
        sampler: ResumableBatchSampler = self.batch_sampler
        start = 0
        if self._pending is not None and self._pending["epoch"] == sampler.epoch:
            start = min(self._pending["consumed"], len(sampler))
        self._pending = None
        sampler.skip = start
        self._epoch, self._consumed = sampler.epoch, start
        for batch in super().__iter__():
            self._consumed += 1
            yield batch

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self._epoch, "consumed": self._consumed, "num_batches": len(self.batch_sampler), "seed": self.batch_sampler.seed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        if state.get("num_batches") != len(self.batch_sampler) or state.get("seed") != self.batch_sampler.seed:
            rank_zero_warn(
                f"lit_align: the checkpoint's data order ({state.get('num_batches')} batches/epoch, seed {state.get('seed')}) differs "
                f"from this run's ({len(self.batch_sampler)}, seed {self.batch_sampler.seed}): the data, batch_size or seed changed, "
                f"so resuming skips {state.get('consumed')} batches of a different order."
            )
        self._pending = {"epoch": int(state["epoch"]), "consumed": int(state["consumed"])}
