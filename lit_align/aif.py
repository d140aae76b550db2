"""``python -m lit_align.aif``: Zephyr's AI-feedback step from the command line or a YAML.

    python -m lit_align.aif --models '[data/embedded/sft, embedded:tiny]' --out outputs/aif
    python -m lit_align.aif --config experiments/zephyr/configs/aif.yaml --models '[...]' --out ...
    python -m lit_align.aif --help

The judge is any ``RewardFunction`` by class path, e.g.
``--judge lit_align.rewards.HFClassifierReward --judge.model OpenAssistant/reward-model-deberta-v3-large-v2``.
See ``lit_align.data.aif.run_aif`` for every argument.
"""

from __future__ import annotations

import os
import sys

from jsonargparse import CLI

from lit_align.data.aif import run_aif


def main(args: list[str] | None = None):
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    return CLI(run_aif, args=args, as_positional=False)


if __name__ == "__main__":
    main(sys.argv[1:])
