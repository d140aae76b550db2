"""One row per run in TensorBoard's HPARAMS tab: the run's settings and its final evaluation.

TensorBoard's hparams plugin lists every run of a logdir that wrote a hparams summary, with the
values of chosen metric tags; its scatter-plot view then draws any metric against any other, so
runs that log ``eval/kl`` and ``eval/reward`` show the reward–KL frontier of a whole sweep. Lightning
writes that summary only when given metrics (``default_hp_metric: false`` in lit_align/defaults.yaml
keeps its placeholder ``hp_metric = -1`` out), so this callback writes it once, when fit ends, with
the metric tags the plugin then reads from the run's scalars.
"""

from __future__ import annotations

import inspect
from typing import Any

from lightning import Callback, LightningModule, Trainer
from lightning.fabric.utilities.logger import _flatten_dict
from lightning.pytorch.loggers import TensorBoardLogger
from torch.utils.tensorboard.summary import hparams

# Scalars of the final evaluation that become hparams metrics, when they were logged.
FINAL_METRICS = ("eval/reward", "eval/kl", "eval/gold_reward", "eval/length", "val/loss", "val/rewards/accuracies")
SETTING_TYPES = (bool, int, float, str)


def init_arguments(obj: Any) -> dict[str, Any]:
    """``obj``'s constructor arguments as it kept them (attributes of the same name): DataModules here
    keep their settings as attributes rather than in ``hparams``."""
    if obj is None:
        return {}
    names = inspect.signature(type(obj).__init__).parameters
    return {name: getattr(obj, name) for name in names if name != "self" and hasattr(obj, name)}


class HParamsSummary(Callback):
    """At the end of fit: write the run's hyperparameters with its last ``FINAL_METRICS`` values as a
    TensorBoard hparams summary, so the HPARAMS tab lists every run and plots metric against metric.

    The hyperparameters are the algorithm (its class name), its scalar init arguments (beta, lr, ...),
    the DataModule's scalar ones (seed, num_samples, ...) and ``extra``.

    Args:
        extra: More settings to list, e.g. ``{method: dpo, strength: 0.1, seed: 0}`` from a sweep
            script, so runs of different algorithms share columns.
    """

    def __init__(self, extra: dict[str, Any] | None = None) -> None:
        self.extra = dict(extra or {})

    def settings(self, trainer: Trainer, pl_module: LightningModule) -> dict[str, Any]:
        found: dict[str, Any] = {"algorithm": type(pl_module).__name__}
        for prefix, arguments in (("model", dict(getattr(pl_module, "hparams", {}))), ("data", init_arguments(trainer.datamodule))):
            for key, value in arguments.items():
                if not key.startswith("_") and isinstance(value, SETTING_TYPES) and not (isinstance(value, str) and len(value) > 200):
                    found[f"{prefix}/{key}"] = value
        found.update(self.extra)
        return found

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.fast_dev_run or not trainer.is_global_zero:
            return
        metrics = {tag: float(trainer.callback_metrics[tag]) for tag in FINAL_METRICS if tag in trainer.callback_metrics}
        if not metrics:
            return  # an hparams row without a metric says nothing
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                # The summary alone: the plugin reads the metrics' values from the run's own scalars, so
                # logging them again (as log_hyperparams does) would add a point to every eval curve.
                settings = logger._sanitize_params(_flatten_dict(self.settings(trainer, pl_module)))
                writer = logger.experiment._get_file_writer()
                # The session summaries only, not the experiment one: the plugin takes the first experiment
                # summary it finds in the logdir as everyone's, and a run's own lists its settings without
                # the other runs' string values, which left the HPARAMS table empty in a browser. Without
                # one, the plugin derives the columns from every run (or from ``write_experiment``'s).
                _, session_start, session_end = hparams(settings, metrics)
                for summary in (session_start, session_end):
                    writer.add_summary(summary, trainer.global_step)


def write_experiment(log_dir: str, settings: dict[str, list], metrics: tuple[str, ...] = FINAL_METRICS) -> None:
    """Write one experiment summary at the root of ``log_dir``, a sweep's logdir: the HPARAMS tab's
    columns are then ``settings`` (name -> every value the runs take) and ``metrics``, instead of every
    setting and scalar tag of every run. Write it after the runs, with all their values."""
    from torch.utils.tensorboard import SummaryWriter

    domains = {name: list(values) for name, values in settings.items() if values}
    experiment, _, _ = hparams({name: values[0] for name, values in domains.items()}, dict.fromkeys(metrics, 0.0), hparam_domain_discrete=domains)
    with SummaryWriter(log_dir) as writer:
        writer._get_file_writer().add_summary(experiment)
