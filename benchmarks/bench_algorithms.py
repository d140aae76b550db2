"""Throughput and memory of each algorithm / reference mode on a fixed tiny-Llama workload, next to TRL.

    python benchmarks/bench_algorithms.py                 # all runs, ~3-5 min on 2 CPU cores
    python benchmarks/bench_algorithms.py --steps 10 --runs dpo-copy,dpo-precomputed,trl-dpo

Every run is a fresh subprocess (peak RSS is per process), trains ``--warmup`` + ``--steps`` steps
of batch ``--batch-size`` pairs on the same JSONL pairs (``benchmarks/workload.py``) and reports:

* tokens/s — real (non-pad) tokens of chosen + rejected sequences per second of step time;
* step time — median seconds per optimiser step after warmup (precompute passes excluded; their
  one-off cost is printed separately);
* peak memory — RSS high-water mark of the process on CPU (also the rise over the RSS measured
  after imports, before the model is built), CUDA peak allocation on GPU;
* achieved FLOP/s = useful model FLOPs per step / step time (``model_flops_per_pair``: 6N per trained
  token and 2N per reference token, the LM head counted only on completion tokens), and MFU against
  the dense-matmul peak measured in the same process.

TRL is an optional extra (``pip install 'lit_align[bench]'``); without it the TRL rows are skipped.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

RUNS = {
    # name: (algorithm class, reference mode, group_by_length, head_mode, gradient checkpointing)
    "dpo-copy": ("DPO", "copy", False, "compact", False),
    "dpo-copy-gc": ("DPO", "copy", False, "compact", True),
    "dpo-copy-fullhead": ("DPO", "copy", False, "full", False),
    "dpo-precomputed": ("DPO", "precomputed", False, "compact", False),
    "dpo-adapter": ("DPO", "adapter", False, "compact", False),
    "dpo-copy-grouped": ("DPO", "copy", True, "compact", False),
    "cdpo-copy": ("ConservativeDPO", "copy", False, "compact", False),
    "ipo-copy": ("IPO", "copy", False, "compact", False),
    "orpo-none": ("ORPO", "none", False, "compact", False),
    # TRL 1.x turns gradient checkpointing on by default; -nogc matches our default (off).
    "trl-dpo": ("trl", "copy", False, None, True),
    "trl-dpo-nogc": ("trl", "copy", False, None, False),
}


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def matmul_peak_flops(device: str, dtype, seconds: float = 1.0) -> float:
    import torch

    n = 1024
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        count += 1
        if device == "cuda":
            torch.cuda.synchronize()
    return 2 * n**3 * count / (time.perf_counter() - start)


class StepTimer:
    """Wall time of each optimiser step after ``warmup`` (Lightning and HF callbacks both call it)."""

    def __init__(self, warmup: int, cuda: bool) -> None:
        self.warmup, self.cuda, self.times, self.cpu_times, self.step, self.started, self.cpu_started = warmup, cuda, [], [], 0, 0.0, 0.0

    def begin(self) -> None:
        self.started = time.perf_counter()
        self.cpu_started = time.process_time()

    def end(self) -> None:
        if self.cuda:
            import torch

            torch.cuda.synchronize()
        if self.step >= self.warmup:
            self.times.append(time.perf_counter() - self.started)
            # CPU seconds of this process: on a shared machine wall time includes waiting for a core.
            self.cpu_times.append(time.process_time() - self.cpu_started)
        self.step += 1


def run_lit_align(args, algorithm: str, reference: str, grouped: bool, head_mode: str, checkpointing: bool, data: str, timer: StepTimer) -> dict:
    from lightning import Callback, Trainer

    import lit_align.algorithms as algorithms
    from lit_align.callbacks import PaddingStats
    from lit_align.data.pairwise import PairwiseDataModule

    class Timing(Callback):
        def on_train_batch_start(self, *a) -> None:
            timer.begin()

        def on_train_batch_end(self, *a) -> None:
            timer.end()

    # Each algorithm at its own defaults (DPO/cDPO beta 0.1, IPO tau, ORPO lambda).
    module = getattr(algorithms, algorithm)(model=args.model, reference=reference, reference_batch_size=64, head_mode=head_mode, gradient_checkpointing=checkpointing)
    datamodule = PairwiseDataModule(model=args.model, dataset=data, val_fraction=0.05, batch_size=args.batch_size, max_length=64, max_prompt_length=16, group_by_length=grouped)
    trainer = Trainer(
        accelerator=args.accelerator,
        devices=1,
        precision=args.precision,
        max_steps=args.warmup + args.steps,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[Timing(), padding := PaddingStats()],
    )
    start = time.perf_counter()
    trainer.fit(module, datamodule)
    policy = module.policy.policy
    trainable = sum(p.numel() for p in policy.parameters() if p.requires_grad)
    frozen_or_all = sum(p.numel() for p in policy.parameters() if not p.requires_grad or reference != "adapter")
    return {"parameters": frozen_or_all, "trainable": trainable, "fit_s": time.perf_counter() - start, "padding_fraction": padding.run_padding_fraction}


def run_trl(args, data: str, checkpointing: bool, timer: StepTimer) -> dict:
    import torch
    from datasets import load_dataset
    from transformers import TrainerCallback
    from trl import DPOConfig, DPOTrainer

    from lit_align.modeling import load_causal_lm, load_tokenizer

    class Timing(TrainerCallback):
        def on_step_begin(self, *a, **k) -> None:
            timer.begin()

        def on_step_end(self, *a, **k) -> None:
            timer.end()

    tokenizer = load_tokenizer(args.model)
    policy = load_causal_lm(args.model, tokenizer)
    config = DPOConfig(
        output_dir=tempfile.mkdtemp(prefix="trl-bench-"),
        per_device_train_batch_size=args.batch_size,
        max_steps=args.warmup + args.steps,
        learning_rate=5e-5,
        beta=0.1,
        max_length=64,
        report_to=[],
        save_strategy="no",
        logging_strategy="no",
        use_cpu=args.accelerator == "cpu",
        bf16=args.precision == "bf16-mixed",
        dataloader_num_workers=0,
        gradient_checkpointing=checkpointing,
        seed=0,
    )
    dataset = load_dataset("json", data_files=data, split="train")
    # A frozen copy, as TRL makes from a hub name (it cannot rebuild an in-memory model by name).
    reference = copy.deepcopy(policy).eval().requires_grad_(False)
    trainer = DPOTrainer(model=policy, ref_model=reference, args=config, train_dataset=dataset, processing_class=tokenizer, callbacks=[Timing()])
    start = time.perf_counter()
    trainer.train()
    return {"parameters": sum(p.numel() for p in policy.parameters()), "trainable": sum(p.numel() for p in policy.parameters() if p.requires_grad), "fit_s": time.perf_counter() - start, "trl": __import__("trl").__version__, "torch_threads": torch.get_num_threads()}


def tokens_per_pair(model: str, data: str) -> tuple[float, float]:
    """Mean real tokens per pair (prompt+chosen + prompt+rejected) and mean completion tokens per pair, from our tokenisation."""
    from lit_align.data.pairwise import PairwiseDataModule

    datamodule = PairwiseDataModule(model=model, dataset=data, val_fraction=0.05, batch_size=1, max_length=64, max_prompt_length=16)
    datamodule.setup("fit")
    examples = datamodule.train_examples
    real = [2 * len(ex["prompt_ids"]) + len(ex["chosen_ids"]) + len(ex["rejected_ids"]) for ex in examples]
    completion = [len(ex["chosen_ids"]) + len(ex["rejected_ids"]) for ex in examples]
    return statistics.mean(real), statistics.mean(completion)


def model_flops_per_pair(model: str, real: float, completion: float) -> tuple[float, float]:
    """Useful FLOPs of one pair of ``real`` tokens, ``completion`` of them scored: (policy forward+backward, reference forward).

    The usual 6N / 2N per token, with N split: the decoder body (every real token) and the LM head
    (only tokens whose log-prob enters the loss: the completion). Embedding lookups are free. Work
    an implementation does beyond this (head on prompt and padding positions) is not counted, so
    MFU says how much of the machine went into necessary work.
    """
    from lit_align.modeling import load_causal_lm, load_tokenizer

    lm = load_causal_lm(model, load_tokenizer(model))
    head = lm.get_output_embeddings().weight.numel()
    embedding = lm.get_input_embeddings().weight.numel()
    tied = lm.get_output_embeddings().weight is lm.get_input_embeddings().weight
    body = sum(p.numel() for p in lm.parameters()) - head - (0 if tied else embedding)
    per_forward = 2 * (body * real + head * completion)
    return 3 * per_forward, per_forward


def one(args) -> None:
    """Child process: one run, one JSON line on stdout."""
    import torch

    torch.set_num_threads(args.threads)
    algorithm, reference, grouped, head_mode, checkpointing = RUNS[args.one]
    cuda = args.accelerator in ("gpu", "cuda")
    baseline_rss = rss_mb()
    timer = StepTimer(args.warmup, cuda)
    if algorithm == "trl":
        info = run_trl(args, args.data, checkpointing, timer)
    else:
        info = run_lit_align(args, algorithm, reference, grouped, head_mode, checkpointing, args.data, timer)
    step_s = statistics.median(timer.times)
    per_pair, completion_per_pair = tokens_per_pair(args.model, args.data)
    tokens_per_step = per_pair * args.batch_size
    # LoRA (adapter) runs still back-propagate through every layer: counted like full fine-tuning.
    policy_flops, reference_flops = model_flops_per_pair(args.model, per_pair, completion_per_pair)
    flops_per_step = args.batch_size * (policy_flops + (reference_flops if reference in ("copy", "adapter") else 0))
    dtype = torch.bfloat16 if args.precision.startswith("bf16") else torch.float32
    peak = matmul_peak_flops("cuda" if cuda else "cpu", dtype)
    result = {
        "run": args.one,
        "step_s": step_s,
        "tokens_per_s": tokens_per_step / step_s,
        "cpu_s_per_step": statistics.median(timer.cpu_times),
        "tokens_per_cpu_s": tokens_per_step / statistics.median(timer.cpu_times),
        "peak_rss_mb": peak_rss_mb(),
        "rss_rise_mb": peak_rss_mb() - baseline_rss,
        "cuda_peak_mb": torch.cuda.max_memory_allocated() / 2**20 if cuda else None,
        "achieved_flops": flops_per_step / step_s,
        "matmul_peak_flops": peak,
        "mfu": flops_per_step / step_s / peak,
        "steps_timed": len(timer.times),
        "gradient_checkpointing": checkpointing,
        **info,
    }
    print("BENCH " + json.dumps(result), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", default=",".join(RUNS), help=f"comma-separated subset of {', '.join(RUNS)}")
    parser.add_argument("--model", default="tiny-llama-32k", help="tiny-llama-32k (random-init Llama, vocabulary 32000, built here), embedded:tiny (vocabulary 93), or a save_pretrained folder")
    parser.add_argument("--examples", type=int, default=512, help="pairs in the workload")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=20, help="timed steps per run")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--accelerator", default="cpu")
    parser.add_argument("--precision", default="32-true")
    parser.add_argument("--out", default=None, help="also write the results as JSON here")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        return one(args)

    from benchmarks.workload import write_model, write_pairs

    workdir = tempfile.mkdtemp(prefix="lit-align-bench-")
    data = write_pairs(os.path.join(workdir, "pairs.jsonl"), args.examples, seed=0)
    if args.model == "tiny-llama-32k":
        args.model = write_model(os.path.join(workdir, "tiny-llama-32k"))
    env = {**os.environ, "LIT_ALIGN_CACHE": os.path.join(workdir, "cache"), "TOKENIZERS_PARALLELISM": "false", "PYTHONWARNINGS": "ignore"}
    results = []
    for name in args.runs.split(","):
        if name.startswith("trl-") and subprocess.run([sys.executable, "-c", "import trl"], env=env, capture_output=True).returncode:
            print("trl-dpo: skipped (TRL not installed; pip install 'lit_align[bench]')")
            continue
        child = [sys.executable, __file__, "--one", name, "--data", data] + [f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items() if k not in ("one", "data", "runs", "out") and v is not None]
        proc = subprocess.run(child, env=env, capture_output=True, text=True, cwd=REPO)
        line = next((line for line in proc.stdout.splitlines() if line.startswith("BENCH ")), None)
        if line is None:
            print(f"{name}: FAILED\n{proc.stderr[-3000:]}")
            continue
        results.append(json.loads(line[len("BENCH ") :]))
        r = results[-1]
        print(f"{name:18s} {r['tokens_per_s']:9.0f} tok/s  {r['tokens_per_cpu_s']:9.0f} tok/CPU-s  {r['step_s'] * 1000:7.1f} ms/step  peak RSS {r['peak_rss_mb']:6.0f} MB (+{r['rss_rise_mb']:4.0f})  MFU {100 * r['mfu']:5.1f}%", flush=True)
    print_table(results)
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"args": vars(args), "results": results}, f, indent=1)


def print_table(results: list[dict]) -> None:
    """Markdown table; "vs TRL" compares like with like: gradient checkpointing on against ``trl-dpo``
    (TRL's default), off against ``trl-dpo-nogc`` (falling back to whichever TRL run exists)."""
    by_name = {r["run"]: r for r in results}
    live = by_name.get("dpo-copy")
    print("\n| run | tokens/s | tokens/CPU-s | step (ms) | CPU s/step | peak RSS (MB) | RSS rise (MB) | achieved GFLOP/s | MFU | TRL run compared | tokens/s vs TRL | tokens/CPU-s vs TRL | peak RSS vs TRL | step vs dpo-copy | padding |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|")
    for r in results:
        name = "trl-dpo" if r.get("gradient_checkpointing") else "trl-dpo-nogc"
        trl = by_name.get(name) or by_name.get("trl-dpo") or by_name.get("trl-dpo-nogc")
        vs_trl = f"{r['tokens_per_s'] / trl['tokens_per_s']:.2f}x" if trl else "-"
        mem_trl = f"{r['peak_rss_mb'] / trl['peak_rss_mb']:.2f}x" if trl else "-"
        cpu_trl = f"{r['tokens_per_cpu_s'] / trl['tokens_per_cpu_s']:.2f}x" if trl else "-"
        vs_live = f"{r['step_s'] / live['step_s']:.2f}x" if live else "-"
        print(f"| {r['run']} | {r['tokens_per_s']:.0f} | {r['tokens_per_cpu_s']:.0f} | {1000 * r['step_s']:.1f} | {r['cpu_s_per_step']:.3f} | {r['peak_rss_mb']:.0f} | {r['rss_rise_mb']:.0f} | {r['achieved_flops'] / 1e9:.2f} | {100 * r['mfu']:.1f}% | {trl['run'] if trl else '-'} | {vs_trl} | {cpu_trl} | {mem_trl} | {vs_live} | {r.get('padding_fraction', float('nan')):.2f} |")
    if results:
        print(f"\nmatmul peak (1024^2, measured in each run): {statistics.median(r['matmul_peak_flops'] for r in results) / 1e9:.1f} GFLOP/s")


if __name__ == "__main__":
    main()
