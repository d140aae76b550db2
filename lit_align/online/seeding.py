"""Seeds of the draws an online algorithm makes while it trains: one formula for every method.

A draw's seed is a function of where it happens, never of a counter: (base seed, stage, optimiser
step, batch index, stream, rank). So a resumed run draws what the uninterrupted run would have,
validation draws repeat across epochs for a given policy (their numbers are comparable), ranks
draw different samples, and every draw of a step has its own stream (BOND: anchor, policy and
quantile samples), so no two draws share random numbers.

``SeedLayout`` holds the formula's strides. ``DEFAULT_LAYOUT`` (8 streams per step, the last 4 for
validation) is BOND's and J-BOND's and the one a new method should use; online DPO keeps the layout
it was recorded with (``lit_align.algorithms.online_dpo``), so its golden trajectory is unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

SEED_MODULUS = 2**31  # torch.manual_seed takes any 64-bit int; 31 bits keep the seeds portable (numpy, CUDA)
BASE_STRIDE = 1_000_003  # a prime larger than any step x stride: runs with different base seeds never meet


@dataclass(frozen=True)
class SeedLayout:
    """Strides of ``sample_seed``.

    Args:
        step_stride: Seeds per position (the optimiser step in training); the streams of one
            position are ``stream`` in [0, step_stride).
        batch_stride: Seeds per batch index, added in both stages (0: training draws depend on the
            step alone).
        validation_offset: Added in validation, so validation and training streams differ.
        rank_stride: Seeds per process rank (a prime, so ranks do not collide with steps).
        validation_by_batch: The position in validation is the batch index (True) or 0 (False;
            the batch then enters through ``batch_stride`` only).
    """

    step_stride: int = 8
    batch_stride: int = 0
    validation_offset: int = 4
    rank_stride: int = 7919
    validation_by_batch: bool = True


DEFAULT_LAYOUT = SeedLayout()


def sample_seed(base_seed: int, stage: str, step: int, batch_index: int, stream: int = 0, rank: int = 0, layout: SeedLayout = DEFAULT_LAYOUT) -> int:
    """The seed of one draw:

    (base_seed * 1_000_003 + step_stride * position + batch_stride * batch_index
     + validation_offset * [stage != "train"] + stream + rank_stride * rank) mod 2^31,

    position = ``step`` in training; in validation the batch index (or 0, ``validation_by_batch``),
    since the optimiser step does not move while validating and draws should not depend on when
    validation runs.
    """
    training = stage == "train"
    position = step if training else (batch_index if layout.validation_by_batch else 0)
    seed = base_seed * BASE_STRIDE + layout.step_stride * position + layout.batch_stride * batch_index
    seed += layout.validation_offset * (not training) + stream + layout.rank_stride * rank
    return seed % SEED_MODULUS
