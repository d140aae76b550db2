"""Completions per second of the online sampler against ``model.generate`` with the same settings.

    python benchmarks/bench_generation.py                       # embedded:tiny, 32 prompts x k = 4, 24 new tokens
    python benchmarks/bench_generation.py --model embedded:micro --prompts 4 --samples 2 --max-new-tokens 6 --repeats 1   # smoke size
    python benchmarks/bench_generation.py --device cuda --model <folder>

Both engines of ``lit_align.online.generation.sample_completions`` run on the same prompts, seed,
temperature (pure ancestral sampling: no top-k / top-p), budget and row chunks:

* ``generate``: ``model.generate`` on every (prompt, sample) row, i.e. each prompt encoded k times;
* ``shared_prefill``: each distinct prompt encoded once, its KV cache copied to its k rows, then a
  plain decode loop (one forward + one multinomial per token; what online training uses).

The table gives completions/s and new tokens/s (median of ``--repeats`` timed runs after one warm-up)
and whether the two engines drew the same completions for the same seed (they consume the RNG
alike; only float rounding of the smaller prefill batch could split them). Timings are meaningful
only on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from lit_align.data.embedded import embedded_rows
from lit_align.modeling import load_causal_lm, load_tokenizer
from lit_align.online.generation import ENGINES, sample_completions


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="embedded:tiny")
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--samples", type=int, default=4, help="k completions per prompt")
    parser.add_argument("--max-new-tokens", type=int, default=24)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--batch-size", type=int, default=64, help="rows (prompt x sample) per chunk, as the trainer samples")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse(argv)
    tokenizer = load_tokenizer(args.model)
    model = load_causal_lm(args.model, tokenizer).to(args.device).eval()
    prompts = [row["prompt"] for row in embedded_rows("embedded:prompts", "validation", args.prompts, 0)]
    prompt_ids = [tokenizer(p)["input_ids"] for p in prompts]
    rows, samples = [], {}
    for engine in ENGINES:
        def draw():
            return sample_completions(model, tokenizer, prompt_ids, args.samples, args.max_new_tokens, args.temperature, args.batch_size, seed=args.seed, engine=engine)

        samples[engine] = draw()  # warm-up, and the draws compared below
        times = []
        for _ in range(args.repeats):
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            start = time.perf_counter()
            draw()
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
        seconds = statistics.median(times)
        completions = len(prompt_ids) * args.samples
        tokens = sum(len(c) for per_prompt in samples[engine] for c in per_prompt)
        rows.append({"engine": engine, "seconds": seconds, "completions_per_s": completions / seconds, "tokens_per_s": tokens / seconds})
    same = samples["shared_prefill"] == samples["generate"]
    print(f"{args.model} on {args.device}: {args.prompts} prompts x k={args.samples}, {args.max_new_tokens} new tokens, temperature {args.temperature}, "
          f"chunks of {args.batch_size} rows, median of {args.repeats} (torch threads {torch.get_num_threads()})")
    print(f"{'engine':<16}{'s':>9}{'completions/s':>16}{'tokens/s':>11}{'vs generate':>13}")
    base = rows[0]["completions_per_s"]
    for row in rows:
        print(f"{row['engine']:<16}{row['seconds']:>9.3f}{row['completions_per_s']:>16.1f}{row['tokens_per_s']:>11.1f}{row['completions_per_s'] / base:>12.2f}x")
    print(f"same completions for the same seed: {same}")
    for row in rows:
        row["same_completions"] = same
    return rows


if __name__ == "__main__":
    main()
