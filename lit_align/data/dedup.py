"""Holding out a validation split by unique row, so duplicates never leak into it (issue 24, item 3).

A plain random split of rows puts copies of one row on both sides whenever the data holds
duplicates (8 of 10 held-out rows were also in train on one user's file), and validation then
measures memorisation. Here identical rows form one group: a group is held out or trained on as a
whole, validation holds each held-out row once, and the duplicates are counted and reported.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from datasets import Dataset


def row_key(row: dict) -> str:
    """The row's content as a string key: equal keys for identical rows (nested chat messages included)."""
    return json.dumps(row, sort_keys=True, ensure_ascii=False, default=str)


@dataclass
class HeldOut:
    train: Dataset
    validation: Dataset
    duplicates: int  # rows identical to an earlier row of the file
    left_out: int  # copies of held-out rows kept out of both splits (they would leak into train)


def split_unique(rows: Dataset, val_fraction: float, seed: int, by_row: bool = False) -> HeldOut:
    """Hold out ``val_fraction`` of the distinct rows of ``rows`` (seeded). Without duplicates this is
    exactly ``rows.train_test_split`` with the same size and seed, so existing runs split as before.
    ``by_row``: skip reading the rows (each is its own group), for rows that cannot be decoded."""
    first: dict[str, int] = {}
    groups = list(range(len(rows))) if by_row else [first.setdefault(row_key(row), len(first)) for row in rows]
    unique = len(rows) if by_row else len(first)
    size = max(1, round(val_fraction * unique))
    if unique == len(rows):
        held = rows.train_test_split(test_size=size, seed=seed)
        return HeldOut(held["train"], held["test"], 0, 0)
    if unique < 2:
        return HeldOut(rows, rows.select([]), len(rows) - unique, 0)
    held_groups = set(Dataset.from_dict({"group": list(range(unique))}).train_test_split(test_size=size, seed=seed)["test"]["group"])
    train, validation, seen = [], [], set()
    for index, group in enumerate(groups):
        if group not in held_groups:
            train.append(index)
        elif group not in seen:
            seen.add(group)
            validation.append(index)
    left_out = len(rows) - len(train) - len(validation)
    return HeldOut(rows.select(train), rows.select(validation), len(rows) - unique, left_out)


def overlap(train: Dataset, validation: Dataset) -> int:
    """How many validation rows also appear in ``train`` (for splits the user gave)."""
    keys = {row_key(row) for row in train}
    return sum(row_key(row) in keys for row in validation)
