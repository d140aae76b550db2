"""Loading rows through Hugging Face ``datasets``: hub names, local JSON/JSONL/Parquet/CSV, saved datasets."""

from __future__ import annotations

import os
from collections.abc import Sequence

import datasets
from datasets import Dataset

from lit_align.errors import DataError

LOCAL_BUILDERS = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".csv": "csv"}


def load_rows(
    dataset: str,
    split: str = "train",
    subset: str | None = None,
    data_files: str | list[str] | dict[str, str] | None = None,
) -> Dataset:
    """One split of ``dataset``, which may be a local file, a ``save_to_disk`` folder, a folder of
    data files, or a hub name (with optional ``subset``/``data_files``)."""
    path = os.path.expanduser(dataset)
    try:
        if os.path.isfile(path):
            builder = LOCAL_BUILDERS.get(os.path.splitext(path)[1].lower())
            if builder is None:
                raise DataError(f"{dataset}: unsupported file type; use one of {sorted(LOCAL_BUILDERS)}")
            if os.path.getsize(path) == 0:
                raise DataError(f"{dataset}: the file is empty; point `dataset` at a file with rows")
            try:
                return datasets.load_dataset(builder, data_files={split: path}, split=split)
            except ValueError as error:
                # datasets' words for a file that parses to zero rows ("Instruction 'train' corresponds
                # to no data!") suggest giving a local file, which the user did.
                if "corresponds to no data" not in str(error):
                    raise
                what = "only a header line, no data rows" if builder == "csv" else "only blank lines or an empty list, no rows"
                raise DataError(f"{dataset}: the file has {what}; add rows to it, or point `dataset` at the file that holds them") from error
        if os.path.isdir(path) and os.path.exists(os.path.join(path, "dataset_dict.json")):
            loaded = datasets.load_from_disk(path)
            if split not in loaded:
                raise DataError(f"{dataset}: no split {split!r}; available: {sorted(loaded)}")
            return loaded[split]
        if os.path.isdir(path) and os.path.exists(os.path.join(path, "state.json")):
            return datasets.load_from_disk(path)
        return datasets.load_dataset(path, subset, data_files=data_files, split=split)
    except DataError:
        raise
    except UnicodeDecodeError as error:
        raise DataError(f"{dataset}: file is not valid UTF-8 ({error}); re-encode it as UTF-8") from error
    except datasets.exceptions.DatasetGenerationError as error:
        # The builder's own message is on the cause (e.g. a JSON syntax error with its line).
        raise DataError(f"{dataset}: could not parse the file: {error.__cause__ or error}. Check that it is valid {os.path.splitext(path)[1] or 'data'} (one JSON object per line for .jsonl)") from error
    # ConnectionError: a hub name with no cached copy while offline (HF_HUB_OFFLINE, or no network).
    except (FileNotFoundError, ConnectionError, ValueError, datasets.exceptions.DatasetNotFoundError) as error:
        raise DataError(
            f"could not load dataset {dataset!r} (split {split!r}): {error}. Give a local file (.json/.jsonl/.parquet/.csv), "
            "a folder written by Dataset.save_to_disk, or a hub name available offline."
        ) from error


def select_columns(rows: Dataset, required: Sequence[str], columns: dict[str, str] | None, source: str) -> Dataset:
    """Rename user columns onto the names we expect (``columns`` maps ours -> theirs) and check them."""
    columns = dict(columns or {})
    renames = {theirs: ours for ours, theirs in columns.items() if theirs != ours and theirs in rows.column_names}
    missing_mapped = [f"{ours} -> {theirs}" for ours, theirs in columns.items() if theirs not in rows.column_names]
    if missing_mapped:
        raise DataError(f"{source}: column mapping names columns that do not exist: {missing_mapped}; available: {rows.column_names}")
    rows = rows.rename_columns(renames) if renames else rows
    missing = [name for name in required if name not in rows.column_names]
    if missing:
        raise DataError(
            f"{source}: missing column(s) {missing}; available: {rows.column_names}. "
            f"Map yours with e.g. `columns: {{{missing[0]}: your_column_name}}` in the data config."
        )
    return rows
