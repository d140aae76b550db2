"""KL(pi || pi_ref) estimated from samples of pi: the one place it is computed.

Schulman, "Approximating KL Divergence" (2020): with y ~ pi and r = pi_ref(y) / pi(y),

* k1 = -log r = log pi(y) - log pi_ref(y): unbiased, high variance, can be negative. Summed over a
  sequence it is the sampled sequence-level KL logged as ``eval/kl``, ``train/kl`` (BOND) and by
  the over-optimisation study; per token it is the penalty in the reward (PPO for RLHF, RLOO).
* k2 = (log r)^2 / 2: biased, low variance, >= 0.
* k3 = (r - 1) - log r: unbiased, low variance, >= 0; GRPO's loss term (arXiv 2402.03300, Eq. 4).

The inputs are log-probs of the same samples (per sequence or per token, any shape); the output has
their shape: reduce it (mean over samples, masked sum over tokens) where it is used.
"""

from __future__ import annotations

import torch

KL_ESTIMATORS = ("k1", "k2", "k3")


def kl_k1(logps: torch.Tensor, reference_logps: torch.Tensor) -> torch.Tensor:
    """k1 = log pi(y) - log pi_ref(y)."""
    return logps - reference_logps


def kl_k2(logps: torch.Tensor, reference_logps: torch.Tensor) -> torch.Tensor:
    """k2 = (log pi(y) - log pi_ref(y))^2 / 2."""
    return 0.5 * (logps - reference_logps).square()


def kl_k3(logps: torch.Tensor, reference_logps: torch.Tensor) -> torch.Tensor:
    """k3 = (r - 1) - log r with log r = log pi_ref(y) - log pi(y) (expm1: exact near r = 1)."""
    log_ratio = reference_logps - logps
    return torch.expm1(log_ratio) - log_ratio


def kl_estimate(logps: torch.Tensor, reference_logps: torch.Tensor, estimator: str = "k1") -> torch.Tensor:
    """The named estimator (``k1``, ``k2`` or ``k3``) of each sample's KL term."""
    functions = {"k1": kl_k1, "k2": kl_k2, "k3": kl_k3}
    if estimator not in functions:
        raise ValueError(f"unknown KL estimator {estimator!r}; expected one of {', '.join(KL_ESTIMATORS)}")
    return functions[estimator](logps, reference_logps)
