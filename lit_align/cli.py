"""``python -m lit_align fit|validate --config <recipe>.yaml``: LightningCLI over every algorithm and DataModule.

Any ``LightningModule``/``LightningDataModule`` can be named by ``class_path`` — including classes
outside this package (see ``examples/``) — so plugging in an algorithm needs no edit here.
The shared defaults (trainer, logger, callbacks, AdamW) load first from ``lit_align/defaults.yaml``;
recipes and overrides compose on top. ``cli_main`` is the command line: configuration and data
errors (``lit_align.errors.UserError``) print as one paragraph; ``main`` is the Python API and raises.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys

from lightning import LightningDataModule, LightningModule
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.callbacks import ModelSummary as LightningModelSummary
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.utilities.exceptions import SIGTERMException

# Import for their side effect of being importable by short class name in YAML/--help.
import lit_align.algorithms  # noqa: F401
import lit_align.callbacks  # noqa: F401
import lit_align.data.best_of_n  # noqa: F401
import lit_align.data.pairwise  # noqa: F401
import lit_align.data.sft  # noqa: F401
import lit_align.data.unpaired  # noqa: F401
from lit_align.algorithms import AlignmentModule
from lit_align.callbacks.nonfinite import NonFiniteGuard
from lit_align.callbacks.preemption import Preemption, exit_status, find_last_checkpoint
from lit_align.callbacks.summary import ModelSummary
from lit_align.checkpoint_io import check_resume_matches, use_atomic_saves
from lit_align.cli_checks import check_config_files, check_learning_rate, check_output_folders, check_processes
from lit_align.errors import ConfigError, UserError

DEFAULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "defaults.yaml")
DEBUG_FLAG = "--debug"
DEBUG_ENV = "LIT_ALIGN_DEBUG"
# Lightning's own ckpt_path keywords; anything else names a file.
CKPT_KEYWORDS = ("last", "best", "hpc", "registry")
DEFAULT_SAVE_DIR = "runs"  # the logger's save_dir in defaults.yaml


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
        self._preflight()
        self._connect()
        _no_checkpoint_under_fast_dev_run(self.trainer)
        # Lightning's "last" looks only in this run's new version_N folder; look in the earlier ones.
        config = self.config_init[self.subcommand]
        path = config.get("ckpt_path")
        if path == "last":
            config["ckpt_path"] = find_last_checkpoint(self.trainer)
            if config["ckpt_path"] is None and self.trainer.is_global_zero:
                print("lit_align: warning: --ckpt_path last found no readable checkpoint of this run name: starting from scratch.", file=sys.stderr)
        elif path is not None and not _names_no_local_file(str(path)) and not os.path.exists(str(path)):
            raise ConfigError(
                f"--ckpt_path {path!r} does not exist. Give a checkpoint file written by a run "
                "(runs/<name>/version_N/checkpoints/*.ckpt), or `last` to resume the latest run of this name."
            )
        path = config.get("ckpt_path")
        if path is not None and os.path.isfile(str(path)):
            check_resume_matches(str(path), self.model, self.datamodule)

    def _preflight(self) -> None:
        """Cheap checks before anything is spawned, computed or written (lit_align/cli_checks.py)."""
        check_learning_rate(self.config[self.subcommand])
        check_processes(self.trainer)
        check_output_folders(self.trainer, self.config[self.subcommand], self.model, self.datamodule)
        use_atomic_saves(self.trainer.strategy)  # a killed or disk-full save never damages a checkpoint

    def _run_subcommand(self, subcommand: str) -> None:
        try:
            super()._run_subcommand(subcommand)
        except (SystemExit, KeyboardInterrupt) as stop:
            _remove_unused_log_dir(self.trainer)
            # Lightning's SIGTERMException is a bare SystemExit() (status 0), and its Ctrl-C path exits 1:
            # exit 128 + signal instead, so schedulers and `&&` see an unfinished run (docs/troubleshooting.md).
            if isinstance(stop, SIGTERMException) or _stopped_by_signal(self.trainer):
                raise SystemExit(exit_status(self.trainer)) from None
            raise
        except BaseException:
            _remove_unused_log_dir(self.trainer)
            raise

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
        _logs_follow_default_root_dir(config)

    def _instantiate_trainer(self, config, callbacks):
        # Lightning's default summary prints "Total FLOPs: 0" for a module without example_input_array
        # (lit_align/callbacks/summary.py); ours leaves that out. A summary named in the config stays.
        configured = config.get("callbacks") or []
        configured = configured if isinstance(configured, list) else [configured]
        wanted = config.get("enable_model_summary") is not False and not config.get("barebones")
        if wanted and not any(isinstance(c, LightningModelSummary) for c in configured):
            config = {**config, "enable_model_summary": False}
            callbacks = [*callbacks, ModelSummary()]
        return super()._instantiate_trainer(config, callbacks)

    def after_fit(self) -> None:
        self._summary()

    def before_validate(self) -> None:
        self._connect()

    def _connect(self) -> None:
        # The one explicit step where the data's facts reach the algorithm (AlignmentModule.connect);
        # any other LightningModule can be named by class_path too, and has no such hook.
        if isinstance(self.model, AlignmentModule):
            self.model.connect(self.datamodule)

    def after_validate(self) -> None:
        self._summary()

    def _summary(self) -> None:
        trainer = self.trainer
        if trainer.fast_dev_run:
            return
        # trainer.log_dir broadcasts rank 0's folder (a collective): every rank asks, then rank 0 prints.
        log_dir = trainer.log_dir if trainer.logger is not None else None
        if not trainer.is_global_zero:
            return
        shown = ("val/loss", "val/rewards/accuracies", "val/rewards/margins", "eval/reward", "eval/kl")
        values = {k: float(trainer.callback_metrics[k]) for k in shown if k in trainer.callback_metrics}
        if values:
            print("lit_align: final " + ", ".join(f"{k} = {v:.4f}" for k, v in values.items()))
        if log_dir:
            print(f"lit_align: TensorBoard logs in {log_dir}  (view: tensorboard --logdir {os.path.dirname(log_dir.rstrip(os.sep)) or '.'})")
        _print_checkpoint_line(trainer)


def _print_checkpoint_line(trainer) -> None:
    """Where `--ckpt_path last` resumes from, only when a checkpoint exists (``max_steps 0`` writes none)."""
    if trainer.state.fn == "fit" and trainer.global_step == 0:
        print("lit_align: no training step ran (global step 0): nothing was trained, no checkpoint was written.")
        return
    callback = trainer.checkpoint_callback
    folder = callback.dirpath if callback is not None else None
    if folder and os.path.isdir(folder) and any(name.endswith(".ckpt") for name in os.listdir(folder)):
        print(f"lit_align: checkpoints in {folder} (resume with --ckpt_path last)")


def _stopped_by_signal(trainer) -> bool:
    return any(isinstance(cb, Preemption) and cb.signal_number is not None for cb in getattr(trainer, "callbacks", None) or [])


def _logs_follow_default_root_dir(config) -> None:
    """``--trainer.default_root_dir X`` moves the TensorBoard logs (hence checkpoints and exports) to
    ``X/<run_name>/version_N``, as it moves Lightning's own logs, unless the logger's ``save_dir`` was
    changed from the shared default (``runs``, lit_align/defaults.yaml)."""
    root = config.trainer.get("default_root_dir")
    loggers = config.trainer.get("logger")
    if root is None or loggers is None or isinstance(loggers, bool):
        return
    for logger in loggers if isinstance(loggers, list) else [loggers]:
        init = logger.get("init_args") if hasattr(logger, "get") else None
        if init is not None and init.get("save_dir") == DEFAULT_SAVE_DIR:
            init["save_dir"] = str(root)


def _names_no_local_file(path: str) -> bool:
    """Lightning's keywords (``best``, ``registry:<name>``, ...) and remote URLs (``s3://...``)."""
    return path in CKPT_KEYWORDS or path.startswith("registry:") or "://" in path


def _no_checkpoint_under_fast_dev_run(trainer) -> None:
    """fast_dev_run promises no checkpoints, and Lightning's ModelCheckpoint skips every save then
    but the ``save_last`` one in ``on_train_end``. With the logger disabled its folder falls back to
    ``<default_root_dir>/checkpoints``, so each dry run left a ``last-vN.ckpt`` in the current folder."""
    if trainer.fast_dev_run:
        for callback in trainer.checkpoint_callbacks:
            if isinstance(callback, ModelCheckpoint):
                callback.save_last = False


def _remove_unused_log_dir(trainer) -> None:
    """A start that failed leaves runs/<name>/version_N with nothing but config.yaml/hparams: remove it,
    so version numbers and TensorBoard show real runs only. Anything with a checkpoint stays."""
    logger = trainer.logger
    if logger is None or not trainer.is_global_zero or trainer.global_step > 0:
        return
    log_dir = getattr(logger, "log_dir", None)
    if not log_dir or not os.path.isdir(log_dir):
        return
    kept = {"config.yaml", "hparams.yaml"}
    for _, dirs, files in os.walk(log_dir):
        if any(not (f in kept or ".tfevents." in f) for f in files):
            return
    shutil.rmtree(log_dir, ignore_errors=True)
    with contextlib.suppress(OSError):  # and runs/<name> when that was its only version
        os.rmdir(os.path.dirname(os.path.normpath(log_dir)))


def _import(class_path: str):
    module, _, name = class_path.rpartition(".")
    return getattr(__import__(module, fromlist=[name]), name)


def main(args: list[str] | None = None) -> AlignCLI:
    """Run the CLI in-process (Python API and tests): errors propagate as exceptions."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    check_config_files(list(sys.argv[1:] if args is None else args))
    defaults = {"default_config_files": [DEFAULTS]}
    return AlignCLI(
        LightningModule,
        LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        parser_kwargs={"fit": defaults, "validate": defaults},
        save_config_kwargs={"overwrite": True},
        args=args,
        auto_configure_optimizers=False,
    )


def user_error(error: BaseException) -> UserError | None:
    """The ``UserError`` behind ``error``, if any: jsonargparse and Lightning wrap what our classes
    raise while being instantiated or set up, so follow the chain of causes."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, UserError):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


def cli_main(args: list[str] | None = None) -> None:
    """``python -m lit_align`` / ``lit-align``: a configuration or data error prints one paragraph
    and exits with status 1; ``--debug`` or ``LIT_ALIGN_DEBUG=1`` shows its traceback. Any other
    exception is a bug and keeps its traceback. A run stopped by SIGTERM or Ctrl-C (after saving
    ``preempted.ckpt``) exits 143 or 130, never 0."""
    argv = list(sys.argv[1:] if args is None else args)
    debug = DEBUG_FLAG in argv or os.environ.get(DEBUG_ENV, "") not in ("", "0")
    argv = [a for a in argv if a != DEBUG_FLAG]
    try:
        if args is None:  # LightningCLI reads sys.argv itself (and warns when also given args)
            sys.argv[1:] = argv
            main()
        else:
            main(argv)
    except Exception as error:
        found = user_error(error)
        if found is None or debug:
            raise
        message = " ".join(str(found).split())
        print(f"lit_align: error: {message}\n(For the traceback, rerun with {DEBUG_FLAG} or {DEBUG_ENV}=1.)", file=sys.stderr)
        raise SystemExit(1) from None


if __name__ == "__main__":
    cli_main()
