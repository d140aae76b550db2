"""The reward over-optimisation study (experiments/overoptimization): its math, and a --quick run end to end."""

from __future__ import annotations

import itertools
import math
import os
import re

import numpy as np
import pytest

from experiments.overoptimization.aggregate import Curve, fit_bon, fit_rl, study_start, turn_down
from experiments.overoptimization.fits import analytic_bon_kl, best_of_n_by_proxy, best_of_n_weights, fit


def test_fits_recover_known_coefficients_and_peaks():
    d = np.linspace(0.0, 4.0, 21)
    bon = fit("bon", d, d * (0.30 - 0.05 * d))
    assert (bon.alpha, bon.beta) == pytest.approx((0.30, 0.05), abs=1e-9) and bon.r2 == pytest.approx(1.0) and bon.points == 21
    assert bon.peak == pytest.approx(0.30 / (2 * 0.05))  # d (alpha - beta d) is highest at alpha / (2 beta)
    rl = fit("rl", d, d * (0.40 - 0.25 * np.log(np.where(d > 0, d, 1.0))))
    assert (rl.alpha, rl.beta) == pytest.approx((0.40, 0.25), abs=1e-9)
    assert rl.peak == pytest.approx(math.exp(0.40 / 0.25 - 1))  # derivative alpha - beta (log d + 1) = 0
    # Least squares with noise: close to, not exactly, the truth; a monotone curve has no peak.
    rng = np.random.default_rng(0)
    noisy = fit("bon", d, d * (0.30 - 0.05 * d) + rng.normal(0, 0.01, d.size))
    assert noisy.alpha == pytest.approx(0.30, abs=0.02) and noisy.beta == pytest.approx(0.05, abs=0.01) and noisy.alpha != 0.30
    assert fit("bon", d, 0.2 * d + 0.01 * d * d).peak is None
    with pytest.raises(ValueError, match="at least 2 points"):
        fit("rl", np.array([0.0, 1.0]), np.array([0.0, 0.1]))


def test_best_of_n_by_proxy_is_the_average_over_every_subset():
    rng = np.random.default_rng(1)
    proxy, gold = rng.normal(size=(3, 6)), rng.normal(size=(3, 6))
    for n in (1, 2, 3, 6):
        brute_gold, brute_proxy = [], []
        for row in range(3):
            picks = [max(subset, key=lambda i: proxy[row, i]) for subset in itertools.combinations(range(6), n)]
            brute_gold.append(np.mean([gold[row, i] for i in picks]))
            brute_proxy.append(np.mean([proxy[row, i] for i in picks]))
        assert best_of_n_by_proxy(proxy, gold, n) == pytest.approx((np.mean(brute_gold), np.mean(brute_proxy)), abs=1e-12)
    assert best_of_n_weights(6, 3).sum() == pytest.approx(1.0)
    assert analytic_bon_kl(1) == 0.0 and analytic_bon_kl(2) == pytest.approx(math.log(2) - 0.5)


def seeds_of(gold_per_seed: list[list[float]], d: list[float]) -> Curve:
    return Curve("p/m/beta=0.1", [[{"step": 10 * i, "d": d[i], "kl": d[i] ** 2, "gold": g, "proxy": float(i), "spearman": 0.5, "length": 5.0}
                                   for i, g in enumerate(gold)] for gold in gold_per_seed])


def test_turn_down_needs_the_per_seed_drop_above_zero():
    d = [0.0, 1.0, 2.0, 3.0]
    falls = seeds_of([[0, 0.3, 0.5, 0.2], [0, 0.35, 0.55, 0.3], [0, 0.25, 0.45, 0.15]], d)
    verdict = turn_down(falls)
    assert (verdict.verdict, verdict.peak_step, verdict.last_step) == ("yes", 20, 30)
    assert verdict.drop[0] == pytest.approx(np.mean([0.3, 0.25, 0.3])) and verdict.drop[1] > 0
    assert verdict.peak_d[0] == pytest.approx(2.0) and verdict.proxy_change[0] == pytest.approx(1.0)
    # The seed mean falls, but one seed rises: the interval includes 0.
    noisy = seeds_of([[0, 0.3, 0.5, 0.2], [0, 0.35, 0.3, 0.5], [0, 0.25, 0.6, 0.45]], d)
    assert turn_down(noisy).verdict == "not measurably"
    assert turn_down(seeds_of([[0, 0.1, 0.2, 0.3], [0, 0.1, 0.3, 0.35]], d)).verdict == "no"
    assert "no: gold is highest at the last measurement (step 30" in turn_down(seeds_of([[0, 0.1, 0.2, 0.3]], d)).words()


def test_fit_intervals_cover_the_truth_over_seeds_and_prompts():
    rng = np.random.default_rng(0)
    d = np.linspace(0.0, 3.0, 7)
    truth = d * (0.40 - 0.25 * np.log(np.where(d > 0, d, 1.0)))
    # A 95% interval over 3 seeds covers the true coefficients in most repeats, and is narrow.
    covered = []
    for _ in range(60):
        summary = fit_rl(seeds_of([list(truth + rng.normal(0, 0.01, d.size)) for _ in range(3)], list(d)))
        covered.append((summary.alpha[0] < 0.40 < summary.alpha[1], summary.beta[0] < 0.25 < summary.beta[1]))
        assert summary.alpha[1] - summary.alpha[0] < 0.1 and len(summary.peaks) == 3 and summary.pooled.points == 21
    alpha_rate, beta_rate = np.mean(covered, axis=0)
    assert alpha_rate >= 0.85
    assert beta_rate >= 0.85
    # Best-of-N: the interval comes from resampling prompts; more prompts give a narrower one.
    ns = (1, 2, 4, 8)
    def pool(prompts):
        proxy = rng.normal(size=(prompts, 8))
        return {"p": proxy.tolist(), "gold": (proxy + rng.normal(0, 1.0, proxy.shape)).tolist()}
    few, many = fit_bon(pool(16), "p", ns, resamples=100)[0], fit_bon(pool(256), "p", ns, resamples=100)[0]
    assert few.alpha[0] <= few.pooled.alpha <= few.alpha[1]
    assert many.alpha[1] - many.alpha[0] < few.alpha[1] - few.alpha[0]


def test_study_start_averages_every_runs_first_measurement():
    results = {f"p/m/b=1/seed={s}": {"points": [{"step": 0, "kl": 0.0, "gold": g, "proxy/p": 2 * g, "spearman/p": 0.1, "length": 3}]} for s, g in enumerate((0.1, 0.3))}
    assert study_start(results) == pytest.approx({"gold": 0.2, "proxy/p": 0.4})


@pytest.mark.slow
def test_quick_study_end_to_end_and_resumes(tmp_path, capsys):
    from experiments.overoptimization.plan import QUICK, runs
    from experiments.overoptimization.run import main

    out = str(tmp_path / "study")
    # embedded:micro untrained as the "SFT" start: the pipeline, not the numbers, is what CI checks here.
    summary = main(["--quick", "--out", out, "--sft-model", "embedded:micro"])
    names = {r.name for r in runs(QUICK)}
    # --quick optimises against the first proxy only: 2 methods x 2 seeds.
    assert set(summary["results"]) == names and len(names) == 4 and {r.seed for r in runs(QUICK)} == {0, 1}
    for proxy in QUICK.proxies:
        quality = summary["quality"][proxy.name]
        assert 0.0 <= quality["accuracy"] <= 1.0 and quality["heldout_pairs"] > 0
    for name, result in summary["results"].items():
        points = result["points"]
        assert [p["step"] for p in points] == list(range(0, QUICK.steps + 1, QUICK.eval_every)), name
        assert abs(points[0]["kl"]) < 1e-4  # step 0: the policy is the SFT start itself
        assert abs(points[-1]["kl"]) > 1e-5  # ...and has moved after training
        assert all(math.isfinite(p["gold"]) and all(math.isfinite(p[f"proxy/{q.name}"]) for q in QUICK.proxies) for p in points)
    # Best-of-N rows: KL column is log N - (N-1)/N, d its square root.
    text = open(summary["results_md"]).read()
    for proxy in QUICK.proxies:
        rows = re.findall(r"^\| (\d+) \| ([\d.]+) \| ([\d.]+) \| ([+-][\d.]+) \|", text.split(f"### {proxy.name}")[1].split("### ")[0], re.M)
        assert [int(r[0]) for r in rows] == list(QUICK.bon_ns)
        for n, kl, d, gold in rows:
            assert float(kl) == pytest.approx(analytic_bon_kl(int(n)), abs=6e-4) and float(d) == pytest.approx(math.sqrt(analytic_bon_kl(int(n))), abs=6e-4)
        assert float(rows[0][3]) == 0.0  # rewards are relative to N = 1
    assert "| Best-of-N | d(α − βd) |" in text
    # Seeds are averaged into one curve per method, every measurement with both seeds.
    verdicts = re.findall(r"^\| rm_sft_64 \| (\w+|Best-of-N) \| (yes|no|not measurably)", text, re.M)
    assert sorted(m for m, _ in verdicts) == ["Best-of-N", "bond", "offline_dpo"]
    trajectory = re.findall(r"^\| (bond/N=2|offline_dpo/beta=0.1) \| (\d+) \| (\d+) \|", text, re.M)
    assert len(trajectory) == 2 * (QUICK.steps // QUICK.eval_every + 1) and all(seeds == "2" for *_, seeds in trajectory)
    for figure in summary["figures"]:
        assert os.path.getsize(figure) < 200_000
    # A second call reuses every finished piece.
    capsys.readouterr()
    again = main(["--quick", "--out", out, "--sft-model", "embedded:micro"])
    assert all(r["reused"] for r in again["results"].values())
    assert "0 to train" in capsys.readouterr().out
