"""Save the final policy with ``save_pretrained`` so any Hugging Face tool can load it."""

from __future__ import annotations

import os

from lightning import Callback, LightningModule, Trainer
from transformers.utils import logging as hf_logging

from lit_align.fsdp import fsdp_root, full_state_dict


class ExportPretrained(Callback):
    """At the end of ``fit``, write policy + tokenizer to ``<log_dir>/hf_model`` and to ``also_to``.

    Args:
        subdir: Folder name inside the run's log directory.
        also_to: A second, stable location (e.g. ``data/embedded/sft``, where the embedded recipes start).
    """

    def __init__(self, subdir: str = "hf_model", also_to: str | None = None) -> None:
        self.subdir = subdir
        self.also_to = also_to
        self.paths: list[str] = []

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.fast_dev_run or trainer.sanity_checking:
            return
        if trainer.global_step == 0:  # max_steps 0: an export would overwrite also_to with the start model
            if trainer.is_global_zero:
                print("lit_align: no training step ran, so no policy was exported.")
            return
        # Under FSDP each rank holds a shard: gather the full weights (every rank takes part), then
        # rank 0 writes them. Under DDP / one device rank 0's module is already complete.
        root = fsdp_root(getattr(trainer.strategy, "model", None))
        state = full_state_dict(root) if root is not None else None
        # trainer.log_dir broadcasts rank 0's folder (a collective): every rank asks, then rank 0 writes.
        root_dir = trainer.log_dir or trainer.default_root_dir
        if not trainer.is_global_zero:
            return
        tokenizer = getattr(trainer.datamodule, "tokenizer", None)
        self.paths = [os.path.join(root_dir, self.subdir)] + ([self.also_to] if self.also_to else [])
        # save_pretrained's "Writing model shards" bar says nothing for a one-file export; the line below does.
        shown = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()
        try:
            for path in self.paths:
                pl_module.export(path, tokenizer, state_dict=state)
                print(f"lit_align: saved the trained policy (save_pretrained, safetensors) to {path}")
        finally:
            if shown:
                hf_logging.enable_progress_bar()
