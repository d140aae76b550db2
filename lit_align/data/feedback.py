"""Turning scored completions into preference pairs (DPO's sampling protocol, Zephyr's AIF rule)."""

from __future__ import annotations

import random
from collections.abc import Hashable, Sequence


def select_pair(scores: Sequence[float], rng: random.Random, keys: Sequence[Hashable] | None = None) -> tuple[int, int] | None:
    """Indices (chosen, rejected) among K scored completions, or None when all scores tie.

    Zephyr (arXiv 2310.16944, Sec. 3): chosen is the highest-scored completion, rejected a random
    one of the others. Ties for the top go to the lowest index (deterministic); the rejected one
    is drawn only among completions scored strictly lower, so a pair never prefers a tie.
    With K = 2 this is the DPO paper's protocol of labelling two samples by the reward.

    ``keys`` (e.g. the completion texts) additionally keeps a duplicate of the chosen completion
    from being drawn as rejected: with a noisy judge the same text can score lower the second
    time, and a pair of identical texts carries no preference.
    """
    best = max(range(len(scores)), key=lambda i: (scores[i], -i))
    lower = [i for i in range(len(scores)) if scores[i] < scores[best] and (keys is None or keys[i] != keys[best])]
    if not lower:
        return None
    return best, rng.choice(lower)
