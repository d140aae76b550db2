"""Learning from the policy's own samples: the on-policy contract every online method builds on.

* ``generation`` — batched KV-cache sampling (``sample_completions``, ``SamplingSettings``);
* ``scoring`` — decoding and scoring samples with a ``RewardFunction``;
* ``rollout`` — the ``Rollout`` batch (ids, padded tensors, masks, rewards, group index,
  per-token log-probs) and ``token_logps(model, rollout)``;
* ``sampling`` — the ``OnlineSampling`` mixin (settings from the data, seeded draws, rollouts);
* ``prompts`` — ``PromptDataModule``, the generic prompt source (k samples per prompt);
* ``seeding`` — ``sample_seed``, the one seed formula of every draw;
* ``estimators`` — registries of advantage estimators and policy losses (RLOO, GRPO, PPO);
* KL estimators live with the losses (``lit_align.losses.kl``) and are re-exported here.

Names are imported on first use (PEP 562), so low-level modules (data, callbacks) can import
``lit_align.online.generation`` without pulling in the algorithm side.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "SamplingSettings": "generation",
    "sample_completions": "generation",
    "cut_at_eos": "generation",
    "decode_completion": "scoring",
    "decode_completions": "scoring",
    "score_completions": "scoring",
    "score_texts": "scoring",
    "Rollout": "rollout",
    "token_logps": "rollout",
    "OnlineSampling": "sampling",
    "PromptDataModule": "prompts",
    "SeedLayout": "seeding",
    "DEFAULT_LAYOUT": "seeding",
    "sample_seed": "seeding",
    "ADVANTAGE_ESTIMATORS": "estimators",
    "POLICY_LOSSES": "estimators",
    "register_advantage_estimator": "estimators",
    "register_policy_loss": "estimators",
}
_KL = ("kl_k1", "kl_k2", "kl_k3", "kl_estimate", "KL_ESTIMATORS")

__all__ = [*_EXPORTS, *_KL]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"lit_align.online.{_EXPORTS[name]}"), name)
    if name in _KL:
        return getattr(importlib.import_module("lit_align.losses.kl"), name)
    raise AttributeError(f"module 'lit_align.online' has no attribute {name!r}")
