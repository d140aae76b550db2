"""Where one DPO step's time goes: reference forward, policy forward, backward, optimiser step.

    python benchmarks/step_breakdown.py                               # tiny-llama-32k, compact head, fused AdamW
    python benchmarks/step_breakdown.py --head-mode full --no-fused    # the other choices, for comparison
    python benchmarks/step_breakdown.py --model embedded:tiny
    python benchmarks/step_breakdown.py --workload long-prompt --prefix-sharing   # prompt once per pair

A plain loop (no Trainer) over the benchmark workload's batches, so each phase is timed alone;
prints the median milliseconds of each phase over the timed steps.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny-llama-32k", help="tiny-llama-32k, llama-88m, embedded:tiny or a save_pretrained folder")
    parser.add_argument("--head-mode", default="compact", choices=["compact", "full"])
    parser.add_argument("--workload", default="short", choices=["short", "long-prompt"])
    parser.add_argument("--prefix-sharing", action="store_true", help="one [prompt | chosen | rejected] row per pair (lit_align.prefix_sharing)")
    parser.add_argument("--no-fused", action="store_true", help="AdamW's per-tensor (foreach) loop instead of the fused kernel")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    args = parser.parse_args()

    import torch

    from benchmarks.workload import MODELS, WORKLOADS, write_model
    from lit_align.prefix_sharing import pair_layout
    from lit_align.algorithms import DPO
    from lit_align.data.pairwise import PairwiseDataModule

    torch.set_num_threads(args.threads)
    workdir = tempfile.mkdtemp(prefix="lit-align-breakdown-")
    os.environ.setdefault("LIT_ALIGN_CACHE", os.path.join(workdir, "cache"))
    model = write_model(os.path.join(workdir, "model"), **MODELS[args.model]) if args.model in MODELS else args.model
    writer, max_length, max_prompt_length = WORKLOADS[args.workload]
    data = writer(os.path.join(workdir, "pairs.jsonl"), args.batch_size * (args.steps + args.warmup) + 32, seed=0)
    module = DPO(model=model, head_mode=args.head_mode)
    datamodule = PairwiseDataModule(model=model, dataset=data, val_fraction=0.05, batch_size=args.batch_size, max_length=max_length, max_prompt_length=max_prompt_length)
    datamodule.setup("fit")
    params = [p for p in module.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-5, fused=not args.no_fused, foreach=None if not args.no_fused else True)
    phases: dict[str, list[float]] = {"shared layout": [], "reference forward": [], "policy forward": [], "backward": [], "optimiser step": []}
    examples = datamodule.train_examples
    for step in range(args.warmup + args.steps):
        batch = datamodule.collate(examples[step * args.batch_size : (step + 1) * args.batch_size])
        rows = (batch.input_ids, batch.attention_mask, batch.loss_mask)
        marks = [time.perf_counter()]
        layout = pair_layout(module.policy.policy, *rows) if args.prefix_sharing else None
        marks.append(time.perf_counter())
        reference = module.policy.reference_logps(*rows, layout=layout)
        marks.append(time.perf_counter())
        policy = module.policy.policy_logps(*rows, layout=layout)
        marks.append(time.perf_counter())
        (policy.sum - reference.sum).mean().backward()
        marks.append(time.perf_counter())
        optimizer.step()
        optimizer.zero_grad()
        marks.append(time.perf_counter())
        if step >= args.warmup:
            for name, start, end in zip(phases, marks, marks[1:]):
                phases[name].append(1000 * (end - start))
    total = sum(statistics.median(v) for v in phases.values())
    print(f"{args.model}, {args.workload} workload, head_mode={args.head_mode}, prefix sharing {'on' if args.prefix_sharing else 'off'}, AdamW {'foreach' if args.no_fused else 'fused'}, {args.threads} threads, batch {args.batch_size} pairs:")
    for name, values in phases.items():
        print(f"  {name:18s} {statistics.median(values):7.1f} ms")
    print(f"  {'sum':18s} {total:7.1f} ms")


if __name__ == "__main__":
    main()
