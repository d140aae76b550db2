"""lit_align.online.seeding: one formula; its layouts reproduce the seeds BOND / J-BOND and online DPO
were recorded with, and distinct draws get distinct seeds."""

from __future__ import annotations

from lit_align.algorithms.online_dpo import ONLINE_PAIRS_SEEDS
from lit_align.online.seeding import DEFAULT_LAYOUT, sample_seed


def test_default_layout_is_bonds_formula():
    for base, stage, step, batch, stream, rank in [(0, "train", 3, 5, 1, 0), (7, "validate", 11, 2, 2, 1), (2**40, "train", 10**6, 0, 3, 3)]:
        position = step if stage == "train" else batch
        want = (base * 1_000_003 + 8 * position + 4 * (stage != "train") + stream + 7919 * rank) % 2**31
        assert sample_seed(base, stage, step, batch, stream, rank) == want


def test_online_pairs_layout_is_online_dpos_formula():
    for base, stage, step, batch, rank in [(0, "train", 3, 5, 0), (7, "validate", 11, 2, 1), (5, "train", 40, 1, 2)]:
        position = step if stage == "train" else 0
        want = (base * 1_000_003 + 7_919 * position + 2 * batch + (stage != "train") + 104_729 * rank) % 2**31
        assert sample_seed(base, stage, step, batch, 0, rank, ONLINE_PAIRS_SEEDS) == want


def test_draws_of_a_run_never_share_a_seed():
    seeds = {sample_seed(0, stage, step, batch, stream, rank)
             for stage in ("train", "validate") for step in range(20) for batch in ([0] if stage == "train" else range(20)) for stream in range(4) for rank in range(2)}
    assert len(seeds) == 2 * (20 * 4 + 20 * 4)
    # Validation draws do not depend on the step they happen at (comparable across epochs).
    assert sample_seed(0, "validate", 3, 1) == sample_seed(0, "validate", 90, 1) != sample_seed(0, "validate", 3, 2)
    assert DEFAULT_LAYOUT.step_stride == 8
