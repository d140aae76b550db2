"""Keep off the screen what a user cannot act on; installed when ``lit_align`` is imported.

Each filter matches one known message, so every other warning still shows.
"""

from __future__ import annotations

import logging
import warnings

# The frozen reference is in eval mode on purpose (see PolicyWithReference.train); Lightning warns
# about it at every fit, from the CLI and from Trainer.fit in Python alike.
EVAL_MODE_WARNING = r"Found \d+ module\(s\) in eval mode"
# torch's pytree deprecation, triggered inside Lightning/transformers, not by our code.
LEAFSPEC_WARNING = r".*isinstance\(treespec, LeafSpec\)"


class _DropLitLoggerTip(logging.Filter):
    """Lightning's advertisement for its hosted logger, printed at every Trainer construction."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "litlogger" not in str(record.msg)


def install() -> None:
    warnings.filterwarnings("ignore", message=EVAL_MODE_WARNING)
    warnings.filterwarnings("ignore", message=LEAFSPEC_WARNING)
    logger = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if not any(isinstance(f, _DropLitLoggerTip) for f in logger.filters):
        logger.addFilter(_DropLitLoggerTip())
