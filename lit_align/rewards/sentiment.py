"""Programmatic ground-truth reward of the embedded task: lexicon sentiment of the completion."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from lit_align.embedded.task import NEGATIVE, POSITIVE
from lit_align.errors import check_range
from lit_align.rewards.base import RewardFunction


class LexiconSentimentReward(RewardFunction):
    """r(x, y) = (#positive - #negative adjectives) / max(#words, min_words), in [-1, 1].

    Stands in for the sentiment classifier of the DPO paper's controlled-sentiment task (App. C.1),
    but is exact, so reward-vs-KL curves measure the algorithm and not a classifier's errors.
    Dividing by the word count keeps length alone from raising the reward; ``min_words`` keeps a
    one-word completion ("great .") from scoring as high as a full review.
    """

    def __init__(self, min_words: int = 3) -> None:
        check_range(self, "min_words", min_words, 1, integer=True)
        self.min_words = min_words
        self._positive = frozenset(POSITIVE)
        self._negative = frozenset(NEGATIVE)

    def score(self, completion: str) -> float:
        words = [w for w in completion.split() if w.isalpha()]
        hits = sum(w in self._positive for w in words) - sum(w in self._negative for w in words)
        return hits / max(len(words), self.min_words)

    def __call__(self, prompts: Sequence[str], completions: Sequence[str]) -> torch.Tensor:
        return torch.tensor([self.score(c) for c in completions], dtype=torch.float32)
