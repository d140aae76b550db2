"""Decoding sampled completions and scoring them with a reward: the one path every caller takes.

Online BOND / J-BOND / online DPO, the offline Best-of-N builder, Zephyr's AI-feedback pool and the
sampled evaluation all turn token ids into text and text into rewards. One convention for all:
special tokens (EOS, padding, chat markup tokens) are skipped and surrounding whitespace is
stripped, so a reward sees the same string for the same sample whoever drew it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import PreTrainedTokenizerBase

from lit_align.rewards.base import RewardFunction
from lit_align.rewards.sanity import warn_if_constant


def decode_completion(tokenizer: PreTrainedTokenizerBase, ids: Sequence[int]) -> str:
    """One completion as text: special tokens skipped, surrounding whitespace stripped."""
    return tokenizer.decode(ids, skip_special_tokens=True).strip()


def decode_completions(tokenizer: PreTrainedTokenizerBase, completion_ids: Sequence[Sequence[Sequence[int]]]) -> list[list[str]]:
    """K completions per prompt (token ids, ``[B][K][tokens]``) as text ``[B][K]``."""
    return [[decode_completion(tokenizer, c) for c in per_prompt] for per_prompt in completion_ids]


def score_texts(reward: RewardFunction, prompt_texts: Sequence[str], texts: Sequence[Sequence[str]]) -> torch.Tensor:
    """Rewards [B, K] of K decoded completions per prompt, in one call of ``reward`` (prompt-major order)."""
    k = len(texts[0]) if texts else 0
    if any(len(per_prompt) != k for per_prompt in texts):
        raise ValueError(f"every prompt needs the same number of completions, got {sorted({len(t) for t in texts})}")
    prompts = [p for p in prompt_texts for _ in range(k)]
    flat = [t for per_prompt in texts for t in per_prompt]
    scores = reward(prompts, flat).to(torch.float32).view(len(prompt_texts), k)
    warn_if_constant(reward, scores)  # a reward that scores every text alike: said once, loudly
    return scores


def score_completions(tokenizer: PreTrainedTokenizerBase, reward: RewardFunction, prompt_texts: Sequence[str], completion_ids: Sequence[Sequence[Sequence[int]]]) -> torch.Tensor:
    """Rewards [B, K] of K completions (token ids) per prompt, decoded by ``decode_completions``."""
    return score_texts(reward, prompt_texts, decode_completions(tokenizer, completion_ids))
