"""Time of one optimiser step and size of its state, torch's fused AdamW against LowMemoryAdamW.

    python benchmarks/optimizer_step.py                      # llama-88m's parameters, 2 threads
    python benchmarks/optimizer_step.py --model tiny-llama-32k --steps 3

The parameters are a random-init Llama of the benchmark presets (``benchmarks/workload.py``) with
random gradients; each optimiser takes ``--warmup`` steps, then ``--steps`` timed ones (median).
What it measures is the optimiser alone: the forward and backward of a DPO step at this size take
seconds, so this is the cost the memory settings add to a step. Time it on an idle machine.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="llama-88m", help="a preset of benchmarks/workload.py MODELS")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    args = parser.parse_args()

    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from benchmarks.workload import MODELS
    from lit_align.optim import LowMemoryAdamW, use_fused_adam

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    params = list(LlamaForCausalLM(LlamaConfig(**MODELS[args.model])).parameters())
    for p in params:
        p.grad = torch.randn_like(p) * 1e-3
    settings = {
        "torch.optim.AdamW (fused, as the recipes)": lambda: use_fused_adam(torch.optim.AdamW(params, lr=1e-5)),
        "LowMemoryAdamW float32": lambda: LowMemoryAdamW(params, lr=1e-5, state_dtype="float32"),
        "LowMemoryAdamW bfloat16, stochastic rounding": lambda: LowMemoryAdamW(params, lr=1e-5),
        "LowMemoryAdamW bfloat16, round to nearest": lambda: LowMemoryAdamW(params, lr=1e-5, stochastic_rounding=False),
    }
    print(f"{args.model}: {sum(p.numel() for p in params) / 1e6:.1f}M parameters, {args.threads} threads, median of {args.steps} steps\n")
    print("| optimiser | step (ms) | state (MB) |\n|---|---:|---:|")
    for name, build in settings.items():
        optimizer, times = build(), []
        for index in range(args.warmup + args.steps):
            start = time.perf_counter()
            optimizer.step()
            if index >= args.warmup:
                times.append(time.perf_counter() - start)
        state = sum(v.numel() * v.element_size() for s in optimizer.state.values() for v in s.values() if v.dim() > 0)
        print(f"| {name} | {1000 * statistics.median(times):.0f} | {state / 2**20:.0f} |")


if __name__ == "__main__":
    main()
