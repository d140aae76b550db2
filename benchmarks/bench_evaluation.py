"""Seconds of one final ``SampledEvaluation`` (sampling, reward, KL) with each sampling engine.

    python benchmarks/bench_evaluation.py                      # embedded:tiny, 256 prompts x 4 samples, 24 new tokens
    python benchmarks/bench_evaluation.py --model embedded:micro --prompts 4 --samples 2 --max-new-tokens 6 --repeats 1   # smoke size

The comparison's final evaluation, on a policy a little away from its reference (so KL > 0):

* ``generate``: ``model.generate``, then a forward pass of the policy and one of the reference over
  the samples for eval/kl;
* ``shared_prefill`` (the default since the decode loop returns log-probs): each prompt encoded once
  for its samples, the policy's log-probs read off the decode loop, then the reference's pass only.

It prints the median of ``--repeats`` timed runs after one warm-up, and whether both engines gave
the same draws (same eval/length and eval/reward) and eval/kl to 1e-5. Timings mean something only
on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from lit_align.callbacks import SampledEvaluation
from lit_align.data.sft import SFTDataModule
from lit_align.modeling import load_causal_lm
from lit_align.online.generation import ENGINES


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="embedded:tiny")
    parser.add_argument("--prompts", type=int, default=256)
    parser.add_argument("--samples", type=int, default=4, help="samples per prompt")
    parser.add_argument("--max-new-tokens", type=int, default=24)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: as each comparison run trains)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse(argv)
    torch.set_num_threads(args.threads)
    data = SFTDataModule(model=args.model, dataset="embedded:demonstrations", batch_size=2, num_examples=8, num_val_examples=8)
    data.setup()
    reference, policy = load_causal_lm(args.model), load_causal_lm(args.model)
    with torch.no_grad():  # a policy that has moved a little from its reference
        policy.lm_head.weight.add_(0.05 * torch.randn(policy.lm_head.weight.shape, generator=torch.Generator().manual_seed(0)))
    rows = []
    for engine in ENGINES:
        evaluation = SampledEvaluation(num_prompts=args.prompts, samples_per_prompt=args.samples, max_new_tokens=args.max_new_tokens, prompts="embedded:prompts", engine=engine)
        measured = evaluation.measure(policy, data, reference)  # warm-up, and the numbers compared below
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            evaluation.measure(policy, data, reference)
            times.append(time.perf_counter() - start)
        rows.append({"engine": engine, "seconds": statistics.median(times), **measured})
    generate, shared = rows
    same = generate["eval/length"] == shared["eval/length"] and generate.get("eval/reward") == shared.get("eval/reward")
    kl_close = abs(generate["eval/kl"] - shared["eval/kl"]) < 1e-5
    print(f"{args.model}: {args.prompts} prompts x {args.samples} samples, {args.max_new_tokens} new tokens, median of {args.repeats} (torch threads {torch.get_num_threads()})")
    print(f"{'engine':<16}{'s':>9}{'vs generate':>13}{'eval/kl':>12}")
    for row in rows:
        print(f"{row['engine']:<16}{row['seconds']:>9.3f}{row['seconds'] / generate['seconds']:>12.2f}x{row['eval/kl']:>12.5f}")
    print(f"same draws: {same}; eval/kl within 1e-5: {kl_close}")
    for row in rows:
        row["same_draws"], row["kl_close"] = same, kl_close
    return rows


if __name__ == "__main__":
    main()
