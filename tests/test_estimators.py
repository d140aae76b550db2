"""The advantage-estimator and policy-loss registries: a new entry is one registered function, and
names are checked against the live registry (so a plug-in's entry is accepted, a typo is refused)."""

from __future__ import annotations

import pytest
import torch

from lit_align.errors import ConfigError
from lit_align.online.estimators import ADVANTAGE_ESTIMATORS, POLICY_LOSSES, AdvantageInputs, Advantages, broadcast, check_registered, register_advantage_estimator, sequence_rewards


def test_builtin_entries():
    assert {"rloo", "grpo", "dr_grpo", "gae"} <= set(ADVANTAGE_ESTIMATORS)
    assert {"token_clip", "sequence_clip"} <= set(POLICY_LOSSES)


def test_a_registered_estimator_is_accepted_by_name():
    with pytest.raises(ConfigError, match="'no_baseline' is not registered; choose one of .*rloo"):
        check_registered("RLOO", "advantage_estimator", "no_baseline", ADVANTAGE_ESTIMATORS)

    @register_advantage_estimator("no_baseline")
    def no_baseline(inputs: AdvantageInputs) -> Advantages:
        return broadcast(sequence_rewards(inputs), inputs.completion_mask)

    try:
        check_registered("RLOO", "advantage_estimator", "no_baseline", ADVANTAGE_ESTIMATORS)
        mask = torch.tensor([[0, 1, 1], [1, 1, 0]])
        rewards = torch.tensor([[0.0, 0.5, 1.0], [2.0, 0.0, 7.0]])
        out = ADVANTAGE_ESTIMATORS["no_baseline"](AdvantageInputs(rewards, mask, num_samples=2))
        assert torch.equal(out.advantages, torch.tensor([[0.0, 1.5, 1.5], [2.0, 2.0, 0.0]]))
    finally:
        del ADVANTAGE_ESTIMATORS["no_baseline"]


def test_gae_without_values_is_refused():
    with pytest.raises(ValueError, match="needs values"):
        ADVANTAGE_ESTIMATORS["gae"](AdvantageInputs(torch.zeros(2, 3), torch.ones(2, 3), 2))
