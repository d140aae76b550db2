"""The math of the study: Best-of-N against a proxy, its KL, and Gao et al.'s functional forms.

Gao, Schulman & Hilton 2022, "Scaling Laws for Reward Model Overoptimization" (arXiv 2210.10760),
Sec. 3 / Eq. 1-2: with d = sqrt(KL(pi || pi_init)), the gold reward (minus its value at the start)
follows
    Best-of-N:   R_bon(d) = d (alpha - beta d)
    RL:          R_RL(d)  = d (alpha - beta log d)
Both are linear in (alpha, beta), so least squares is exact linear algebra (numpy.linalg.lstsq).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


def analytic_bon_kl(n: int) -> float:
    """KL(Best-of-N || base) = log N - (N - 1)/N (Stiennon et al. 2020; Beirami et al. 2024 show it is
    an upper bound, exact without ties). Gao et al. use the same formula (Sec. 2.2)."""
    if n < 1:
        raise ValueError(f"N must be >= 1, got {n}")
    return math.log(n) - (n - 1) / n


def best_of_n_weights(m: int, n: int) -> np.ndarray:
    """P(the i-th smallest of m samples is the largest of a uniformly random n-subset) = C(i-1, n-1) / C(m, n).

    The unbiased all-subsets estimator of Best-of-N from m >= n samples (Nakano et al. 2021, App. I;
    Gao et al. Sec. 2.2 use the same), so every N <= m is read off one pool of samples.
    """
    if not 1 <= n <= m:
        raise ValueError(f"need 1 <= N <= m samples, got N={n}, m={m}")
    total = math.comb(m, n)
    return np.array([math.comb(i - 1, n - 1) / total for i in range(1, m + 1)])


def best_of_n_by_proxy(proxy: np.ndarray, gold: np.ndarray, n: int) -> tuple[float, float]:
    """(mean gold, mean proxy) of the sample the PROXY ranks best among N, averaged over prompts.

    ``proxy`` and ``gold`` are [prompts, m] scores of the same samples. Samples are ranked by the proxy
    (stable sort: exact proxy ties are broken by sample index, i.e. at random, as the pool is i.i.d.).
    """
    proxy, gold = np.asarray(proxy, dtype=np.float64), np.asarray(gold, dtype=np.float64)
    if proxy.shape != gold.shape or proxy.ndim != 2:
        raise ValueError(f"proxy and gold must both be [prompts, samples], got {proxy.shape} and {gold.shape}")
    order = np.argsort(proxy, axis=1, kind="stable")
    weights = best_of_n_weights(proxy.shape[1], n)
    gold_sorted = np.take_along_axis(gold, order, axis=1)
    proxy_sorted = np.take_along_axis(proxy, order, axis=1)
    return float((gold_sorted @ weights).mean()), float((proxy_sorted @ weights).mean())


@dataclass(frozen=True)
class Fit:
    """Least-squares fit of one functional form: coefficients, R^2, number of points, the peak."""

    form: str
    alpha: float
    beta: float
    r2: float
    points: int

    def __call__(self, d: np.ndarray) -> np.ndarray:
        return predict(self.form, self.alpha, self.beta, np.asarray(d, dtype=np.float64))

    @property
    def peak(self) -> float | None:
        """d where the fitted curve is highest (None: it never turns down, beta <= 0)."""
        if self.beta <= 0:
            return None
        return self.alpha / (2 * self.beta) if self.form == "bon" else math.exp(self.alpha / self.beta - 1)


def _features(form: str, d: np.ndarray) -> np.ndarray:
    if form == "bon":
        return np.stack([d, -d * d], axis=1)
    if form == "rl":
        # d log d -> 0 as d -> 0 (the start point contributes nothing, as the form says).
        dlogd = np.where(d > 0, d * np.log(np.where(d > 0, d, 1.0)), 0.0)
        return np.stack([d, -dlogd], axis=1)
    raise ValueError(f"form must be 'bon' or 'rl', got {form!r}")


def predict(form: str, alpha: float, beta: float, d: np.ndarray) -> np.ndarray:
    return _features(form, np.asarray(d, dtype=np.float64)) @ np.array([alpha, beta])


def fit(form: str, d: np.ndarray, reward: np.ndarray) -> Fit:
    """Fit ``reward = d (alpha - beta d)`` (form 'bon') or ``d (alpha - beta log d)`` ('rl'), no intercept
    (``reward`` is measured relative to the start, where d = 0)."""
    d, reward = np.asarray(d, dtype=np.float64), np.asarray(reward, dtype=np.float64)
    if d.shape != reward.shape or d.ndim != 1 or (d < 0).any():
        raise ValueError("d and reward must be 1-D of the same length, d >= 0")
    if int((d > 0).sum()) < 2:
        raise ValueError(f"fitting two coefficients needs at least 2 points with d > 0, got {int((d > 0).sum())}")
    x = _features(form, d)
    (alpha, beta), *_ = np.linalg.lstsq(x, reward, rcond=None)
    residual = reward - x @ np.array([alpha, beta])
    spread = ((reward - reward.mean()) ** 2).sum()
    r2 = 1.0 - float((residual**2).sum() / spread) if spread > 0 else float("nan")
    return Fit(form, float(alpha), float(beta), r2, int(d.size))
