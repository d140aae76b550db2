"""The fixed workload of the benchmark (and of the DDP/reference-mode tests): preference pairs of
the embedded review task written to a JSONL file, read by ``PairwiseDataModule`` like user data.

Chosen completions come from a mostly-positive generator and rejected ones from a mostly-negative
one; lengths vary from 2 to ~15 words, so batches really contain padding.
"""

from __future__ import annotations

import json
import random

from lit_align.embedded.task import make_completion, make_prompt


def write_pairs(path: str, n: int, seed: int = 0) -> str:
    """Write ``n`` rows ``{prompt, chosen, rejected}`` to ``path`` (JSONL) and return ``path``."""
    rng = random.Random(seed)
    with open(path, "w") as f:
        for _ in range(n):
            prompt = make_prompt(rng)
            chosen, rejected = make_completion(prompt, rng, 0.9), make_completion(prompt, rng, 0.1)
            while rejected == chosen:
                rejected = make_completion(prompt, rng, 0.1)
            f.write(json.dumps({"prompt": prompt, "chosen": chosen, "rejected": rejected}) + "\n")
    return path
