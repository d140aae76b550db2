"""Precomputed reference log-probs (``reference: precomputed``).

The reference model is frozen, so log pi_ref(y|x) of every training/validation example is a constant
of the dataset: compute it once, before training, with a batch size of its own (no gradients, no
optimiser state: much larger batches fit than for training), cache it on disk and drop the model.
Training then holds ONE model and does ONE forward per step instead of two.

The cache is keyed by the model's fingerprint (path + weight files' sizes/mtimes), its dtype and
the trainer precision, and a digest of the *tokenised* examples — which covers the dataset, the
tokenizer, chat template, ``max_length`` and truncation settings at once: change any of them and
the key changes. Values live in each example dict under ``reference_logps`` as one (sum, count)
per row of the example in collate order (pairwise: chosen then rejected); ``collate_reference_logps``
turns a list of examples into the ``SequenceLogps`` a batch carries.

The pass visits examples longest first, so each batch holds rows of similar length (little padding;
the first batch is the largest, so running out of memory shows at once), and shows a progress bar.
With ``prefix_sharing`` on the algorithm, pairwise batches run prompt-shared rows
(``lit_align.prefix_sharing``), as training does.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import json
import os
from typing import Any

import torch
from lightning.pytorch.utilities import rank_zero_info
from tqdm.auto import tqdm

from lit_align.data.batches import PairwiseBatch
from lit_align.cache import cache_root, model_fingerprint
from lit_align.head import completion_logps
from lit_align.ops import SequenceLogps
from lit_align.prefix_sharing import choose_layout, shared_completion_logps

REFERENCE_KEY = "reference_logps"
# Bump when the row layout or what a value means changes, so old caches are not reused.
CACHE_FORMAT = 1


def collate_reference_logps(examples: list[dict]) -> SequenceLogps | None:
    """Cached reference log-probs of a batch, rows side-major like the collate (all row-0s, then row-1s...)."""
    if not examples or REFERENCE_KEY not in examples[0]:
        return None
    rows = len(examples[0][REFERENCE_KEY])
    values = torch.tensor([ex[REFERENCE_KEY][k] for k in range(rows) for ex in examples], dtype=torch.float32)
    return SequenceLogps(values[:, 0].contiguous(), values[:, 1].contiguous())


def examples_digest(examples: list[dict]) -> str:
    """Hash of the token ids of ``examples``: identical iff tokenised inputs are identical."""
    digest = hashlib.sha1()
    for ex in examples:
        ids = {k: v for k, v in ex.items() if k.endswith("_ids")}
        digest.update(json.dumps(ids, sort_keys=True).encode())
    return digest.hexdigest()


def cache_path(model: str, dtype: str | None, precision: str, splits: dict[str, list[dict]], prefix_sharing: bool | str = False) -> str:
    params = {
        "format": CACHE_FORMAT,
        "model": model_fingerprint(model),
        "dtype": dtype,
        "precision": precision,
        "examples": {name: examples_digest(examples) for name, examples in splits.items()},
    }
    if prefix_sharing:  # same values up to float rounding; keyed apart so a run reuses its own numbers
        params["prefix_sharing"] = prefix_sharing  # True or "auto"
    key = hashlib.sha1(json.dumps(params, sort_keys=True).encode()).hexdigest()[:16]
    return os.path.join(cache_root(), f"reference-{key}", "reference_logps.pt")


def _length(example: dict) -> int:
    return sum(len(v) for k, v in example.items() if k.endswith("_ids"))


@torch.no_grad()
def compute_reference_logps(
    model: torch.nn.Module, collate, examples: list[dict], batch_size: int, device: torch.device, forward_context=None, prefix_sharing: bool | str = False, progress: bool = False
) -> torch.Tensor:
    """[len(examples), rows, 2] tensor of (sum, count) of each example's rows under ``model``, in ``examples`` order."""
    # Longest first: batches of similar lengths pad little (see module docstring).
    order = sorted(range(len(examples)), key=lambda i: -_length(examples[i]))
    out: torch.Tensor | None = None
    for start in tqdm(range(0, len(order), batch_size), desc="reference log-probs", disable=not progress, leave=False):
        indices = order[start : start + batch_size]
        batch = collate([examples[i] for i in indices])
        input_ids, attention_mask, loss_mask = (t.to(device) for t in (batch.input_ids, batch.attention_mask, batch.loss_mask))
        rows = input_ids.shape[0] // len(indices)
        with forward_context() if forward_context is not None else contextlib.nullcontext():
            layout = choose_layout(model, input_ids, attention_mask, loss_mask, prefix_sharing) if isinstance(batch, PairwiseBatch) else None
            logps = shared_completion_logps(model, layout) if layout is not None else completion_logps(model, input_ids, attention_mask, loss_mask)
        # Row k of example i sits at i + k * len(indices) in the collated batch (side-major).
        values = torch.stack([logps.sum, logps.count], dim=-1).float().cpu().view(rows, len(indices), 2).transpose(0, 1)
        if out is None:
            out = torch.zeros(len(examples), rows, 2)
        out[torch.as_tensor(indices)] = values
    return out if out is not None else torch.zeros(0, 1, 2)


def _attach(examples: list[dict], values: torch.Tensor) -> None:
    if len(values) != len(examples):
        raise RuntimeError(f"reference cache holds {len(values)} rows for {len(examples)} examples; delete it and rerun")
    for example, rows in zip(examples, values.tolist()):
        example[REFERENCE_KEY] = [tuple(r) for r in rows]


def _gather(local: dict[str, torch.Tensor], world_size: int) -> list[dict[str, torch.Tensor]]:
    if world_size == 1 or not torch.distributed.is_initialized():
        return [local]
    parts: list[Any] = [None] * world_size
    torch.distributed.all_gather_object(parts, local)
    return parts


def _on_every_rank(flag: bool, world_size: int) -> bool:
    """True when ``flag`` is True on all ranks (every rank gets the same answer)."""
    if world_size == 1 or not torch.distributed.is_initialized():
        return flag
    flags: list[Any] = [None] * world_size
    torch.distributed.all_gather_object(flags, flag)
    return all(flags)


def precompute(setup: Any, datamodule: Any) -> str:
    """Attach cached reference log-probs to ``datamodule``'s train/val examples; compute them if missing.

    ``setup`` is a ``lit_align.reference_modes.ReferenceSetup``: which weights the reference is
    (``model_name``/``dtype``, ``load_model``), the device, batch size, precision and ranks, all passed
    explicitly by the algorithm. Under DDP/FSDP every rank computes a strided share and the shares are
    gathered, so the pass costs 1/world_size of the data per rank; rank 0 writes the cache. The
    reference model is loaded only if the cache is missing and freed before training starts.
    Returns the cache path ("" when every example already carries its values).
    """
    if datamodule is None or not hasattr(datamodule, "train_examples"):
        raise RuntimeError("reference='precomputed' needs an AlignmentDataModule (its examples are what gets precomputed)")
    if not datamodule.train_examples:
        datamodule.setup("fit")
    splits = {"train": datamodule.train_examples, "validation": datamodule.val_examples}
    if all(REFERENCE_KEY in ex for examples in splits.values() for ex in examples):
        return ""
    path = cache_path(setup.model_name, setup.dtype, setup.precision, splits, setup.prefix_sharing)
    # Every rank must take the same branch, since computing gathers all ranks' shares (a collective):
    # on nodes without a shared filesystem one node can hold the file while another lacks it.
    if _on_every_rank(os.path.exists(path), setup.world_size):
        cached = torch.load(path, map_location="cpu")
        rank_zero_info(f"lit_align: reference log-probs loaded from {path}")
    else:
        cached = _compute_splits(setup, datamodule.collate, splits)
        if setup.rank == 0:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            torch.save(cached, path + ".tmp")
            os.replace(path + ".tmp", path)  # atomic: a crashed run never leaves a half-written cache
            rank_zero_info(f"lit_align: reference log-probs cached at {path}")
    for name, examples in splits.items():
        _attach(examples, cached[name])
    return path


def _compute_splits(setup: Any, collate, splits: dict[str, list[dict]]) -> dict[str, torch.Tensor]:
    rank, world_size = setup.rank, setup.world_size
    rank_zero_info(f"lit_align: precomputing reference log-probs of {sum(map(len, splits.values()))} examples (batch size {setup.batch_size}) ...")
    reference = setup.load_model()
    reference.to(setup.device).eval().requires_grad_(False)
    local = {
        name: compute_reference_logps(reference, collate, examples[rank::world_size], setup.batch_size, setup.device, setup.forward_context, setup.prefix_sharing, progress=rank == 0)
        for name, examples in splits.items()
    }
    del reference
    gc.collect()
    parts = _gather(local, world_size)
    cached = {}
    for name, examples in splits.items():
        # Undo the striding: rank r computed examples r, r + W, r + 2W, ...
        values = torch.zeros(len(examples), *parts[0][name].shape[1:])
        for r, part in enumerate(parts):
            values[r::world_size] = part[name]
        cached[name] = values
    return cached


def precompute_reference(module: Any, datamodule: Any, batch_size: int = 64, prefix_sharing: bool | str | None = None) -> str:
    """``precompute`` for an ``AlignmentModule`` (scripts, tests): its ``reference_setup`` says what the pass needs."""
    return precompute(module.reference_setup(batch_size, prefix_sharing), datamodule)
