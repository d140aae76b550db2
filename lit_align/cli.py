"""``python -m lit_align fit|validate --config ...``: LightningCLI over every algorithm and DataModule.

Any ``LightningModule``/``LightningDataModule`` can be named by ``class_path`` — including classes
outside this package (see ``examples/``) — so plugging in an algorithm needs no edit here.
"""

from __future__ import annotations

import os
import sys
import warnings

from lightning import LightningDataModule, LightningModule
from lightning.pytorch.cli import LightningCLI

# Import for their side effect of being importable by short class name in YAML/--help.
import lit_align.algorithms  # noqa: F401
import lit_align.callbacks  # noqa: F401
import lit_align.data.best_of_n  # noqa: F401
import lit_align.data.pairwise  # noqa: F401
import lit_align.data.sft  # noqa: F401
import lit_align.data.unpaired  # noqa: F401
from lit_align.callbacks.nonfinite import NonFiniteGuard
from lit_align.callbacks.preemption import Preemption, find_last_checkpoint


class AlignCLI(LightningCLI):
    def add_arguments_to_parser(self, parser) -> None:
        # The tokenizer must be the policy's: one value, typed once.
        parser.link_arguments("model.init_args.model", "data.init_args.model", apply_on="parse")
        parser.add_argument("--run_name", type=str | None, default=None, help="TensorBoard run name (default: the algorithm's name)")
        # Safety callbacks are always on (algorithm configs replace the callback list) and configurable
        # as --nonfinite.* / --preemption.*; see docs/troubleshooting.md.
        parser.add_lightning_class_args(NonFiniteGuard, "nonfinite")
        parser.add_lightning_class_args(Preemption, "preemption")

    def init_parser(self, **kwargs):
        parser = super().init_parser(**kwargs)
        # jsonargparse prints the whole usage (100+ lines) above a parse error, burying it; keep the
        # error and its "run --help" tip (see docs/troubleshooting.md).
        parser.print_usage = lambda file=None: None
        return parser

    def before_fit(self) -> None:
        # Lightning's "last" looks only in this run's new version_N folder; look in the earlier ones.
        config = self.config_init[self.subcommand]
        if config.get("ckpt_path") == "last":
            config["ckpt_path"] = find_last_checkpoint(self.trainer) or "last"

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        logger = config.trainer.get("logger")
        if isinstance(logger, dict) or hasattr(logger, "init_args"):
            init = logger["init_args"] if isinstance(logger, dict) else logger.init_args
            if init.get("name") in (None, "lightning_logs"):
                name = config.get("run_name")
                if name is None:
                    cls = _import(config.model["class_path"] if isinstance(config.model, dict) else config.model.class_path)
                    name = cls.algorithm_name() if hasattr(cls, "algorithm_name") else cls.__name__.lower()
                init["name"] = name


    def after_fit(self) -> None:
        self._summary()

    def after_validate(self) -> None:
        self._summary()

    def _summary(self) -> None:
        trainer = self.trainer
        if not trainer.is_global_zero or trainer.fast_dev_run:
            return
        shown = ("val/loss", "val/rewards/accuracies", "val/rewards/margins", "eval/reward", "eval/kl")
        values = {k: float(trainer.callback_metrics[k]) for k in shown if k in trainer.callback_metrics}
        if values:
            print("lit_align: final " + ", ".join(f"{k} = {v:.4f}" for k, v in values.items()))
        if trainer.logger is not None and trainer.log_dir:
            print(f"lit_align: TensorBoard logs in {trainer.log_dir}  (view: tensorboard --logdir {os.path.dirname(trainer.log_dir.rstrip(os.sep)) or '.'})")
        if trainer.checkpoint_callback is not None and trainer.checkpoint_callback.dirpath:
            print(f"lit_align: checkpoints in {trainer.checkpoint_callback.dirpath} (resume with --ckpt_path last)")


def _import(class_path: str):
    module, _, name = class_path.rpartition(".")
    return getattr(__import__(module, fromlist=[name]), name)


TRAINER_DEFAULTS = {
    "logger": {"class_path": "lightning.pytorch.loggers.TensorBoardLogger", "init_args": {"save_dir": "runs"}},
}


def main(args: list[str] | None = None) -> AlignCLI:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # The frozen reference is in eval mode on purpose (see PolicyWithReference.train).
    warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode")
    return AlignCLI(
        LightningModule,
        LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        trainer_defaults=TRAINER_DEFAULTS,
        save_config_kwargs={"overwrite": True},
        args=args,
        auto_configure_optimizers=False,
    )


if __name__ == "__main__":
    main(sys.argv[1:])
