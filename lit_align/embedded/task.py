"""Vocabulary and deterministic generators of the synthetic review task.

Prompts are 2-8 words ("honestly , the acting was"); a demonstration continues with adjective
phrases whose sentiment mix is drawn per example, so a model fitted to demonstrations has a broad
reward distribution: alignment has room to move it, and sampling twice per prompt gives pairs with
a real preference signal.
"""

from __future__ import annotations

import random

POSITIVE = (
    "good great excellent wonderful brilliant superb moving charming delightful clever "
    "beautiful funny gripping stunning memorable touching fresh lovely fantastic enjoyable"
).split()
NEGATIVE = (
    "bad poor awful terrible boring dull weak messy clumsy tedious "
    "bland predictable forgettable annoying painful shallow slow ugly silly disappointing"
).split()
NEUTRAL = (
    "and but with a the story plot music pacing ending cast dialogue scenes "
    "very quite rather really mostly somewhat at times overall too also"
).split()
SUBJECTS = ("the film", "the movie", "the plot", "the acting", "the music", "the ending", "this sequel", "the cast")
VERBS = ("was", "is", "felt", "seemed", "looked", "sounded")
# Openers tilt the sentiment of demonstrations, so the best completion depends on the prompt.
OPENERS = {"": 0.0, "honestly ,": 0.0, "sadly ,": -0.2, "happily ,": 0.2, "in short ,": 0.0, "to be fair ,": 0.1}
PUNCTUATION = (".", ",")
ADVERBS = ("very", "quite", "rather", "really", "mostly", "somewhat", "too")
CONNECTORS = ("and", "but", ", and", "with a", "; also")


def vocabulary() -> list[str]:
    """Every word the task can produce, sorted for a deterministic token id order."""
    words = set(POSITIVE) | set(NEGATIVE) | set(NEUTRAL) | set(PUNCTUATION) | {";"}
    for phrase in (*SUBJECTS, *VERBS, *OPENERS, *CONNECTORS):
        words.update(phrase.split())
    return sorted(w for w in words if w)


def make_prompt(rng: random.Random) -> str:
    """A 2-8 word review opening, e.g. ``sadly , the plot felt``."""
    opener = rng.choice(list(OPENERS))
    return " ".join(part for part in (opener, rng.choice(SUBJECTS), rng.choice(VERBS)) if part)


def prompt_tilt(prompt: str) -> float:
    """How much the prompt's opener shifts the positivity of a demonstration."""
    return next((tilt for opener, tilt in OPENERS.items() if opener and prompt.startswith(opener)), 0.0)


def make_completion(prompt: str, rng: random.Random, positivity: float | None = None) -> str:
    """Continue ``prompt`` with 1-4 adjective phrases; each adjective is positive with prob ``positivity``.

    ``positivity=None`` draws it uniformly per example (the mixed-quality demonstrations the SFT
    stage learns from); a fixed high value gives a "teacher" whose samples score well (Zephyr dSFT).
    """
    p = rng.uniform(0.15, 0.85) if positivity is None else positivity
    p = min(1.0, max(0.0, p + prompt_tilt(prompt)))
    words: list[str] = []
    for i in range(rng.randint(1, 4)):
        if i:
            words.extend(rng.choice(CONNECTORS).split())
        if rng.random() < 0.4:
            words.append(rng.choice(ADVERBS))
        words.append(rng.choice(POSITIVE if rng.random() < p else NEGATIVE))
    words.append(".")
    return " ".join(words)


def make_prompts(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [make_prompt(rng) for _ in range(n)]


def make_demonstrations(n: int, seed: int, positivity: float | None = None) -> list[dict[str, str]]:
    """``n`` (prompt, completion) rows, identical for the same seed on every machine."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        prompt = make_prompt(rng)
        rows.append({"prompt": prompt, "completion": make_completion(prompt, rng, positivity)})
    return rows
