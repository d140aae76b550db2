"""The comparison's statistics (experiments/compare/stats.py): intervals, matched KL, dominance."""

from __future__ import annotations

import math

import pytest

from experiments.compare.stats import dominance, frontier, mean_ci, reward_at_kl, t_quantile, verdict


def test_student_t_interval():
    mean, half, n = mean_ci([1.0, 2.0, 3.0])
    assert (mean, n) == (2.0, 3) and half == pytest.approx(4.303 * 1.0 / math.sqrt(3))
    assert mean_ci([5.0]) == (5.0, None, 1) and mean_ci([])[2] == 0
    assert t_quantile(4) == 2.776 and t_quantile(30) == pytest.approx(2.042, abs=1e-3) and t_quantile(1000) == pytest.approx(1.962, abs=1e-3)


def test_reward_at_kl_interpolates_on_the_first_crossing():
    # start (its sampled KL 0.03 counts as 0), then KL 1 -> 3 -> 2 (the curve comes back).
    trajectory = [(0, 0.03, 0.1), (30, 1.0, 0.3), (60, 3.0, 0.7), (90, 2.0, 0.5)]
    assert reward_at_kl(trajectory, 0.5) == pytest.approx(0.2)
    assert reward_at_kl(trajectory, 2.0) == pytest.approx(0.5)  # first crossing: between 1 and 3
    assert reward_at_kl(trajectory, 4.0) is None


def test_frontier_takes_the_best_strength_per_seed():
    results = [
        {"method": "dpo", "seed": 0, "trajectory": [(0, 0.0, 0.1), (120, 2.0, 0.5)]},  # 0.3 at KL 1
        {"method": "dpo", "seed": 0, "trajectory": [(0, 0.0, 0.1), (120, 1.0, 0.4)]},  # 0.4 at KL 1
        {"method": "dpo", "seed": 1, "trajectory": [(0, 0.0, 0.1), (120, 0.5, 0.2)]},  # never reaches 1
        {"method": "ipo", "seed": 0, "trajectory": [(0, 0.0, 0.1), (120, 4.0, 0.9)]},
    ]
    assert frontier(results, "dpo", 1.0) == {0: pytest.approx(0.4)}


def test_dominance_is_paired_over_common_seeds():
    a = {1.0: {0: 0.5, 1: 0.6, 2: 0.55}, 2.0: {0: 0.6, 1: 0.62, 2: 0.64}}
    b = {1.0: {0: 0.4, 1: 0.5, 2: 0.45}, 2.0: {0: 0.7, 1: 0.5}}
    rows, overall = dominance(a, b, "A", "B")
    assert [(kl, n) for kl, _, _, n, _ in rows] == [(1.0, 3), (2.0, 2)]
    assert rows[0][4] == "A > B" and rows[1][4] == "no significant difference"  # differences -0.1, +0.12
    assert overall == "neither dominates: A > B at 1 KL value(s), no significant difference at 1 KL value(s)"
    assert verdict(-0.2, 0.1, 5, "A", "B") == "B > A" and "no interval" in verdict(0.3, None, 1, "A", "B")
    only_a = {1.0: {0: 0.5, 1: 0.6}}
    assert dominance(only_a, {1.0: {0: 0.1, 1: 0.2}}, "A", "B")[1] == "A dominates B at every matched KL both reach (1)"


def test_a_group_is_represented_by_a_method_most_seeds_reach():
    from experiments.compare.tables import MATCHED_KL, group_best

    # At KL 1, "few" has the higher mean but only 2 of 5 seeds reach it: "many" (4 of 5) stands for the group.
    few = {kl: ({0: 0.9, 1: 0.8} if kl == 1.0 else {}) for kl in MATCHED_KL}
    many = {kl: ({0: 0.5, 1: 0.4, 2: 0.6, 3: 0.5} if kl == 1.0 else {}) for kl in MATCHED_KL}
    curves, chosen = group_best({"few": few, "many": many}, ("few", "many"), seeds=5)
    assert chosen == {1.0: "many"} and curves == {1.0: many[1.0]}
    # With 3 seeds in all, 2 is a majority: the higher mean wins.
    assert group_best({"few": few, "many": many}, ("few", "many"), seeds=3)[1] == {1.0: "few"}
