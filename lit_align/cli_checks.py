"""Checks the CLI runs before ``fit`` starts anything expensive: each failure is one paragraph.

Without them these faults surface as tracebacks, some only after minutes of work: AdamW's
``ValueError`` for a negative learning rate; one traceback per rank from the batch sampler when
``--trainer.devices N`` spawns N processes; a ``PermissionError`` from the reference cache after the
whole precompute pass; Lightning's ``OSError`` when the log folder cannot be created. A YAML syntax
error names ``<unicode string>`` instead of the file.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

import yaml

from lit_align.cache import cache_root
from lit_align.errors import ConfigError


def check_config_files(argv: list[str]) -> None:
    """Parse every ``--config`` file's YAML syntax first, so an error names the file (jsonargparse
    parses the text and reports ``<unicode string>``). Only syntax: values are jsonargparse's job."""
    for index, arg in enumerate(argv):
        if arg == "--config" and index + 1 < len(argv):
            path = argv[index + 1]
        elif arg.startswith("--config="):
            path = arg.split("=", 1)[1]
        else:
            continue
        if not os.path.isfile(path):  # a YAML string given inline, or a missing file jsonargparse reports
            continue
        with open(path, encoding="utf-8") as f:
            text = f.read()
        try:
            for _ in yaml.compose_all(text, Loader=yaml.SafeLoader):
                pass
        except yaml.MarkedYAMLError as error:
            mark = error.problem_mark or error.context_mark
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
            raise ConfigError(
                f"--config {path}: YAML syntax error{where}: {error.problem or error.context}. "
                "Fix that line (indentation, a missing ':' or an unclosed bracket or quote)."
            ) from error


def _get(node: Any, *keys: str) -> Any:
    for key in keys:
        if node is None:
            return None
        node = node.get(key) if hasattr(node, "get") else getattr(node, key, None)
    return node


def check_learning_rate(config: Any) -> None:
    """A negative learning rate is AdamW's ValueError; 0 trains nothing without a word: refuse both."""
    lr = _get(config, "model", "init_args", "optimizer", "init_args", "lr")
    if not isinstance(lr, (int, float)) or lr > 0:
        return
    raise ConfigError(
        f"--model.init_args.optimizer.init_args.lr is {lr}: a learning rate must be > 0 "
        + ("(a negative one climbs the loss). " if lr < 0 else "(at 0 the weights never change, so the run would train nothing). ")
        + "Typical values: 5e-7 to 1e-6 for DPO-style methods, 1e-5 to 2e-4 for SFT. To measure a model without "
        "training it, use `python -m lit_align validate` with the same config."
    )


def check_processes(trainer) -> None:
    """More than one process (``--trainer.devices N``): our train sampler shards the batches itself,
    so Lightning's sampler injection must be off; check here, before N ranks each fail."""
    world_size = trainer.world_size
    injects = getattr(getattr(trainer, "_accelerator_connector", None), "use_distributed_sampler", False)
    if world_size <= 1 or not injects:
        return
    accelerator = type(trainer.accelerator).__name__.replace("Accelerator", "").upper()
    on_cpu = accelerator == "CPU"
    raise ConfigError(
        f"--trainer.devices={trainer.num_devices} (x {trainer.num_nodes} node(s)) would start {world_size} training "
        f"processes on {accelerator}{' (this machine has no usable GPU: they would be CPU processes over gloo)' if on_cpu else ''}. "
        "For one process, use --trainer.devices=1. For a multi-process run, add the preset "
        "`--config configs/trainer/ddp.yaml` (or --trainer.use_distributed_sampler=false): lit_align's train "
        "sampler shards the batches across ranks itself, and Lightning's sampler must not shard them again."
    )


def check_writable(path: str, option: str, fix: str | None = None) -> None:
    """``path`` exists as a writable folder, or can be created: probe its nearest existing ancestor
    with a real file (``os.access`` says yes to root even on a read-only mount)."""
    ancestor = os.path.abspath(path)
    while not os.path.exists(ancestor):
        ancestor = os.path.dirname(ancestor)
    problem = None
    if not os.path.isdir(ancestor):
        problem = f"{ancestor} is a file, not a folder"
    else:
        try:
            with tempfile.TemporaryFile(dir=ancestor):
                pass
        except OSError as error:
            problem = f"cannot write in {ancestor} ({error.strerror})"
    if problem:
        raise ConfigError(
            f"{option} {path!r} is not writable: {problem}. "
            + (fix or f"Point {option} at a folder you can write to, or fix its permissions.")
        )


def uses_cache(model: Any, datamodule: Any) -> bool:
    """The embedded task's generated data and ``reference: precomputed`` are written to the cache."""
    reference = getattr(getattr(model, "hparams", None), "get", lambda key: None)("reference")
    return bool(getattr(datamodule, "embedded_task", False)) or reference == "precomputed"


def check_output_folders(trainer, config: Any, model: Any = None, datamodule: Any = None) -> None:
    """The log/checkpoint/export folders and the data cache, before any work is done."""
    if uses_cache(model, datamodule):
        check_writable(cache_root(), "the cache folder (generated data, precomputed reference log-probs)",
                       "Set LIT_ALIGN_CACHE to a folder you can write to (default: ~/.cache/lit_align), or fix its permissions.")
    if trainer.default_root_dir and _get(config, "trainer", "default_root_dir") is not None:
        check_writable(trainer.default_root_dir, "--trainer.default_root_dir")
    for logger in trainer.loggers:
        if getattr(logger, "save_dir", None):
            check_writable(str(logger.save_dir), "the logger's save_dir (--trainer.logger.init_args.save_dir)")
    for callback in trainer.callbacks:
        for attribute in ("dirpath", "also_to"):
            value = getattr(callback, attribute, None)
            if isinstance(value, (str, os.PathLike)) and "://" not in str(value):
                check_writable(str(value), f"{type(callback).__name__}'s {attribute}")
