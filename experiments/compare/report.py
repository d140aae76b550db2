"""Reading the runs back (TensorBoard scalars) and the Best-of-N reference curve (tables.py writes results.md, figure.py frontier.png)."""

from __future__ import annotations

import json
import math

from experiments.compare.plan import Run
from experiments.compare.stats import bon_reward_at
from lit_align.utils.scalars import read_scalars

EVAL_TAGS = ("eval/reward", "eval/kl", "eval/length")


def run_result(run: Run, log_dir: str, wall_seconds: float, steps: int) -> dict:
    """Final and per-evaluation numbers of one finished run, from its TensorBoard scalars."""
    scalars = read_scalars(log_dir)
    missing = [tag for tag in EVAL_TAGS if tag not in scalars]
    if missing:
        raise KeyError(f"{log_dir}: tags {missing} were not logged; logged: {sorted(scalars)}")
    kl = dict(scalars["eval/kl"])
    trajectory = [(step, kl[step], reward) for step, reward in scalars["eval/reward"] if step in kl]
    throughput = scalars.get("throughput/tokens_per_sec", [(0, float("nan"))])[-1][1]
    last = lambda tag: scalars[tag][-1][1] if tag in scalars else float("nan")  # noqa: E731
    return {
        "kl_se": last("eval/kl_se"), "reward_se": last("eval/reward_se"), "eval_prompts": last("eval/prompts"),
        "samples_drawn": last("cost/samples_drawn"), "reward_queries": last("cost/reward_queries"),
        "method": run.method.name, "label": run.method.label(run.value), "value": run.value, "seed": run.seed,
        "run": f"{run.name}/{run.version}", "log_dir": log_dir,
        "reward": trajectory[-1][2], "kl": trajectory[-1][1], "length": scalars["eval/length"][-1][1],
        "start_reward": trajectory[0][2], "start_kl": trajectory[0][1], "steps": steps, "trajectory": trajectory,
        "wall_seconds": wall_seconds, "tokens_per_sec": throughput,
    }


def best_of_n_curve(model_path: str, prompts: list[str], ns: list[int], max_new_tokens: int = 24, seed: int = 4321) -> list[dict]:
    """r(N): mean over prompts of E[max of N rewards] of the model's samples, with KL* = log N - (N-1)/N
    and ``kl_ties``, the tie-aware KL of Best-of-N of the same samples (``empirical_bon_kl``).

    Draws max(ns) samples per prompt once and uses the unbiased all-subsets estimator for every N.
    """
    from lit_align.data.tokenize import PromptCompletionEncoder
    from lit_align.online.generation import sample_completions
    from lit_align.losses.bond import analytic_bon_kl, empirical_bon_kl, expected_best_of_n
    from lit_align.modeling import load_causal_lm, load_tokenizer
    from lit_align.rewards import LexiconSentimentReward

    tokenizer = load_tokenizer(model_path)
    model = load_causal_lm(model_path, tokenizer)
    encoder = PromptCompletionEncoder(tokenizer, 48, 16, "auto")
    ids = [encoder.encode_prompt(p) for p in prompts]
    m = max(ns)
    samples = sample_completions(model, tokenizer, ids, m, max_new_tokens, batch_size=256, seed=seed)
    reward = LexiconSentimentReward()
    texts = [tokenizer.decode(c, skip_special_tokens=True) for per_prompt in samples for c in per_prompt]
    rewards = reward([p for p in prompts for _ in range(m)], texts).view(len(prompts), m)
    return [{"n": n, "kl": analytic_bon_kl(n), "kl_ties": empirical_bon_kl(rewards, n).mean().item(), "reward": expected_best_of_n(rewards, n).mean().item()} for n in ns]


def gap_to_best_of_n(result: dict, curves: dict[int, list[dict]]) -> float | None:
    """Final reward minus Best-of-N's reward at the same KL, on the curve of the run's OWN seed
    (its held-out prompts); None past the curve's last point."""
    curve = curves.get(result["seed"]) or curves.get(str(result["seed"]))
    at = bon_reward_at(result["kl"], curve) if curve else None
    return None if at is None else result["reward"] - at


def save_json(path: str, data) -> None:
    with open(path, "w") as f:
        json.dump(data, f, indent=1, default=lambda x: None if isinstance(x, float) and math.isnan(x) else str(x))


def load_json(path: str):
    with open(path) as f:
        return json.load(f)

