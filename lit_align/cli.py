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
import lit_align.data.pairwise  # noqa: F401
import lit_align.data.sft  # noqa: F401


class AlignCLI(LightningCLI):
    def add_arguments_to_parser(self, parser) -> None:
        # The tokenizer must be the policy's: one value, typed once.
        parser.link_arguments("model.init_args.model", "data.init_args.model", apply_on="parse")
        parser.add_argument("--run_name", type=str | None, default=None, help="TensorBoard run name (default: the algorithm's name)")

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
