"""How far BOND's estimated Best-of-N target sits from the true one on the embedded task (issue 13).

BOND's backward part needs log pi_BoN(y)/pi_ref(y) = g(p_le(y), p_lt(y)) (Theorem 1), but the
quantiles are estimated from m reference samples with a Laplace prior, and E[g(estimate)] != g(truth).
This script takes the SFT model's reward distribution per held-out prompt (``--samples`` draws,
treated as the truth: each distinct reward value is an outcome class) and computes, exactly (the
estimator's counts are enumerated from their multinomial law, no sampling noise):

* true: the Best-of-N reward, sum_v pi_BoN(v) v with the tie-aware Theorem 1;
* for each estimator, the optimum of BOND's Jeffreys objective (beta = 0.5) when the backward part
  targets pi_ref * exp(E[g_hat]) and the forward part the true pi_BoN (the Best-of-N samples
  are exact), and the backward part's own target (beta = 1).

Estimators: ``before`` = quantile against the N anchor samples (m = N), no-ties form, prior 1
(lit_align before issue 13); ``now`` = m = 16 fresh anchor samples, tie-aware, prior 1 (the default).

    python experiments/compare/quantile_bias.py --model outputs/compare/sft [--prompts 64 --samples 128]
"""

from __future__ import annotations

import argparse
import math
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))

import torch  # noqa: E402

from lit_align.losses.bond import bon_log_ratio  # noqa: E402


def classes(rewards: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Distinct reward values of one prompt's samples and their probabilities."""
    values, counts = rewards.unique(return_counts=True)
    return values.double(), counts.double() / counts.sum()


def expected_log_ratio(p_lt: torch.Tensor, p_eq: torch.Tensor, n: int, m: int, prior: float, ties: bool) -> torch.Tensor:
    """E[g_hat(v)] per class when (c_lt, c_eq) of m reference draws ~ Multinomial(m; p_lt, p_eq, p_gt)."""
    c_lt, c_eq = torch.meshgrid(torch.arange(m + 1, dtype=torch.float64), torch.arange(m + 1, dtype=torch.float64), indexing="ij")
    valid = (c_lt + c_eq) <= m
    c_gt = (m - c_lt - c_eq).clamp(min=0)
    p_gt = (1 - p_lt - p_eq).clamp(min=0)
    log_coef = math.lgamma(m + 1) - torch.lgamma(c_lt + 1) - torch.lgamma(c_eq + 1) - torch.lgamma(c_gt + 1)
    def xlogy(x, y):
        return torch.xlogy(x, y.unsqueeze(-1).unsqueeze(-1))
    log_pmf = log_coef + xlogy(c_lt, p_lt) + xlogy(c_eq, p_eq) + xlogy(c_gt, p_gt)
    pmf = torch.where(valid, log_pmf.exp(), torch.zeros(()))
    p_le_hat = (c_lt + c_eq + prior) / (m + 2 * prior)
    p_lt_hat = (c_lt + prior) / (m + 2 * prior)
    g = bon_log_ratio(p_le_hat.float(), n, p_lt_hat.float()).double() if ties else math.log(n) + (n - 1) * torch.log(p_le_hat)
    return (pmf * torch.where(valid, g, torch.zeros(()))).sum((-1, -2))


def jeffreys_optimum(reference: torch.Tensor, bon: torch.Tensor, target_log_ratio: torch.Tensor, beta: float) -> torch.Tensor:
    """argmin_pi (1 - beta) KL(pi_BoN || pi) + beta KL(pi || pi_ref exp(target_log_ratio)) over the classes."""
    log_target = reference.log() + target_log_ratio
    if beta == 1.0:
        return torch.softmax(log_target, 0)
    logits = torch.log(bon.clamp(min=1e-12)).clone().requires_grad_(True)
    optimizer = torch.optim.LBFGS([logits], max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        log_pi = torch.log_softmax(logits, 0)
        loss = -(1 - beta) * (bon * log_pi).sum() + beta * (log_pi.exp() * (log_pi - log_target)).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return torch.softmax(logits.detach(), 0)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="outputs/compare/sft")
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--samples", type=int, default=128, help="reference samples per prompt taken as the true reward distribution")
    parser.add_argument("--seed", type=int, default=0, help="seed of the held-out prompts (as the comparison's data seed)")
    parser.add_argument("--ns", type=int, nargs="+", default=[2, 4, 8])
    args = parser.parse_args(argv)

    from lit_align.data.embedded import embedded_rows
    from lit_align.data.tokenize import PromptCompletionEncoder
    from lit_align.online.generation import sample_completions
    from lit_align.modeling import load_causal_lm, load_tokenizer
    from lit_align.rewards import LexiconSentimentReward

    prompts = [row["prompt"] for row in embedded_rows("embedded:prompts", "validation", args.prompts, args.seed)]
    tokenizer = load_tokenizer(args.model)
    model = load_causal_lm(args.model, tokenizer)
    encoder = PromptCompletionEncoder(tokenizer, 48, 16, "auto")
    samples = sample_completions(model, tokenizer, [encoder.encode_prompt(p) for p in prompts], args.samples, 24, batch_size=256, seed=4321)
    texts = [tokenizer.decode(c, skip_special_tokens=True) for per_prompt in samples for c in per_prompt]
    rewards = LexiconSentimentReward()([p for p in prompts for _ in range(args.samples)], texts).view(len(prompts), args.samples)
    tie_share = torch.stack([(r.unsqueeze(0) == r.unsqueeze(1)).double().mean() for r in rewards]).mean().item()
    zero_share = (rewards == 0).double().mean().item()
    print(f"{len(prompts)} prompts x {args.samples} SFT samples: reference reward {rewards.mean():.3f}; a pair of samples ties with probability {tie_share:.3f}; {zero_share:.1%} of samples score exactly 0")
    estimators = {"before (m = N, no ties, prior 1)": None, "now (m = 16, tie-aware, prior 1)": (16, True)}
    print("| N | Best-of-N reward (true) | estimator | Jeffreys optimum (beta 0.5) | backward target (beta 1) |")
    print("|---|---|---|---|---|")
    for n in args.ns:
        truth, results = [], {name: ([], []) for name in estimators}
        for row in rewards:
            values, reference = classes(row)
            p_le = torch.cumsum(reference, 0)
            p_lt = p_le - reference
            bon = reference * bon_log_ratio(p_le.float(), n, p_lt.float()).double().exp()
            truth.append((bon * values).sum().item())
            for name, setting in estimators.items():
                m, ties = setting if setting else (n, False)
                g = expected_log_ratio(p_lt, reference, n, m, prior=1.0, ties=ties)
                results[name][0].append((jeffreys_optimum(reference, bon, g, 0.5) * values).sum().item())
                results[name][1].append((jeffreys_optimum(reference, bon, g, 1.0) * values).sum().item())
        mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
        for name, (jeffreys, backward) in results.items():
            print(f"| {n} | {mean(truth):.3f} | {name} | {mean(jeffreys):.3f} | {mean(backward):.3f} |")


if __name__ == "__main__":
    main()
