"""Throughput and memory of each algorithm / reference mode on a fixed tiny-Llama workload, next to TRL.

    python benchmarks/bench_algorithms.py                          # short prompts, all runs, ~5 min on 2 CPU cores
    python benchmarks/bench_algorithms.py --workload long-prompt   # prompts ~10x the completions: prefix sharing
    python benchmarks/bench_algorithms.py --steps 10 --runs dpo-copy,dpo-copy-shared,trl-dpo-nogc

Every run is a fresh subprocess (peak RSS is per process), trains ``--warmup`` + ``--steps`` steps
of batch ``--batch-size`` pairs on the same JSONL pairs (``benchmarks/workload.py``) and reports:

* pairs/s — preference pairs trained per second of step time: the headline unit, since it means
  the same with and without prefix sharing (which processes fewer tokens for the same pairs);
* tokens/s — real (non-pad) tokens of the prompt+chosen and prompt+rejected sequences per second
  (the unshared count, whatever the run actually processed);
* step time — median seconds per optimiser step after warmup (precompute passes excluded; their
  one-off cost is printed separately);
* peak memory — RSS high-water mark of the process on CPU (also the rise over the RSS measured
  after imports, before the model is built), CUDA peak allocation on GPU;
* achieved FLOP/s = useful model FLOPs per step / step time (``model_flops_per_pair``: 6N per trained
  token and 2N per reference token, the LM head counted only on completion tokens, the prompt once
  per pair with prefix sharing and twice without), and MFU against the dense-matmul peak measured
  in the same process.

Run names: ``-shared`` sets ``prefix_sharing: true``, every other lit_align run pins ``false``;
``-grouped`` turns on ``group_by_length``. ``dpo-defaults`` passes neither option, so it measures
whatever the defaults are (``prefix_sharing: auto``: its ``shared_fraction`` says how many batches shared).

TRL is an optional extra (``pip install -e '.[trl]'``); without it the TRL rows are skipped.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from typing import NamedTuple

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

class Run(NamedTuple):
    algorithm: str  # class in lit_align.algorithms, or "trl"
    reference: str = "copy"
    grouped: bool | None = False  # None: the DataModule's own default
    head_mode: str | None = "compact"
    checkpointing: bool = False
    prefix_sharing: bool | None = False  # None: the algorithm's own default (auto)


RUNS = {
    "dpo-defaults": Run("DPO", grouped=None, prefix_sharing=None),  # what a user gets without options
    "dpo-copy": Run("DPO"),
    "dpo-copy-gc": Run("DPO", checkpointing=True),
    "dpo-copy-fullhead": Run("DPO", head_mode="full"),
    "dpo-precomputed": Run("DPO", "precomputed"),
    "dpo-adapter": Run("DPO", "adapter"),
    "dpo-copy-grouped": Run("DPO", grouped=True),
    "dpo-copy-shared": Run("DPO", prefix_sharing=True),
    "dpo-copy-grouped-shared": Run("DPO", grouped=True, prefix_sharing=True),
    "dpo-copy-fullhead-shared": Run("DPO", head_mode="full", prefix_sharing=True),
    "dpo-precomputed-grouped": Run("DPO", "precomputed", grouped=True),
    "dpo-precomputed-grouped-shared": Run("DPO", "precomputed", grouped=True, prefix_sharing=True),
    "cdpo-copy": Run("ConservativeDPO"),
    "ipo-copy": Run("IPO"),
    "orpo-none": Run("ORPO", "none"),
    "orpo-none-shared": Run("ORPO", "none", prefix_sharing=True),
    # TRL 1.x turns gradient checkpointing on by default; -nogc matches our default (off).
    "trl-dpo": Run("trl", head_mode=None, checkpointing=True),
    "trl-dpo-nogc": Run("trl", head_mode=None),
    "trl-dpo-precomputed-nogc": Run("trl", "precomputed", head_mode=None),
}
# Default selection: the long-prompt workload is about prefix sharing, the short one about the rest.
DEFAULT_RUNS = {
    "short": [name for name in RUNS if name not in ("orpo-none-shared", "dpo-copy-fullhead-shared")],
    "long-prompt": ["dpo-defaults", "dpo-copy", "dpo-copy-shared", "dpo-copy-grouped", "dpo-copy-grouped-shared", "dpo-precomputed-grouped", "dpo-precomputed-grouped-shared", "trl-dpo-nogc", "trl-dpo-precomputed-nogc"],
}


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def matmul_peak_flops(device: str, dtype, seconds: float = 1.0) -> float:
    import torch

    # 1024^2 saturates a CPU; a large GPU needs bigger tiles to approach its peak.
    n = 8192 if device == "cuda" else 1024
    if device == "cpu" and dtype in (torch.bfloat16, torch.float16):
        # A CPU without half-precision matmul units multiplies 1024^2 bf16 at ~0.8 GFLOP/s (2.6 s a
        # product, measured here): 256^2 keeps the CPU dry runs of the GPU check from spending ~10 s
        # per run on this rate, which only scales their MFU column.
        n = 256
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


def run_lit_align(args, run: Run, data: str, timer: StepTimer) -> dict:
    from lightning import Callback, Trainer

    import lit_align.algorithms as algorithms
    from lit_align.callbacks import PaddingStats
    from lit_align.data.pairwise import PairwiseDataModule
    from lit_align.prefix_sharing import choose_layout

    shared = []

    class Timing(Callback):
        def on_train_batch_start(self, trainer, module, batch, *a) -> None:
            # Which batches ran prompt-shared (auto decides per batch): counts the tokens MFU is computed on.
            shared.append(choose_layout(module.policy.policy, batch.input_ids, batch.attention_mask, batch.loss_mask, module.prefix_sharing) is not None)
            timer.begin()

        def on_train_batch_end(self, *a) -> None:
            timer.end()

    # Each algorithm at its own defaults (DPO/cDPO beta 0.1, IPO tau, ORPO lambda).
    options = {} if run.prefix_sharing is None else {"prefix_sharing": run.prefix_sharing}  # pinned, except dpo-defaults
    module = getattr(algorithms, run.algorithm)(model=args.model, reference=run.reference, reference_batch_size=64, head_mode=run.head_mode, gradient_checkpointing=run.checkpointing, **options)
    grouping = {} if run.grouped is None else {"group_by_length": run.grouped}
    datamodule = PairwiseDataModule(model=args.model, dataset=data, val_fraction=0.05, batch_size=args.batch_size, max_length=args.max_length, max_prompt_length=args.max_prompt_length, **grouping)
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
    frozen_or_all = sum(p.numel() for p in policy.parameters() if not p.requires_grad or run.reference != "adapter")
    return {"parameters": frozen_or_all, "trainable": trainable, "fit_s": time.perf_counter() - start, "padding_fraction": padding.run_padding_fraction, "group_by_length": datamodule.group_by_length, "prefix_sharing": module.prefix_sharing, "shared_fraction": sum(shared) / max(1, len(shared))}


def run_trl(args, run: Run, data: str, timer: StepTimer) -> dict:
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
        max_length=args.max_length,
        precompute_ref_log_probs=run.reference == "precomputed",
        report_to=[],
        save_strategy="no",
        logging_strategy="no",
        use_cpu=args.accelerator == "cpu",
        bf16=args.precision == "bf16-mixed",
        dataloader_num_workers=0,
        gradient_checkpointing=run.checkpointing,
        seed=0,
    )
    dataset = load_dataset("json", data_files=data, split="train")
    # Live reference: a frozen copy, as TRL makes from a hub name (it cannot rebuild an in-memory
    # model by name). Precomputed: none, as TRL holds none then (its pass runs the untrained policy).
    reference = copy.deepcopy(policy).eval().requires_grad_(False) if run.reference != "precomputed" else None
    trainer = DPOTrainer(model=policy, ref_model=reference, args=config, train_dataset=dataset, processing_class=tokenizer, callbacks=[Timing()])
    start = time.perf_counter()
    trainer.train()
    return {"parameters": sum(p.numel() for p in policy.parameters()), "trainable": sum(p.numel() for p in policy.parameters() if p.requires_grad), "fit_s": time.perf_counter() - start, "trl": __import__("trl").__version__, "torch_threads": torch.get_num_threads()}


def tokens_per_pair(args, data: str) -> tuple[float, float, float]:
    """Mean tokens per pair from our tokenisation: real tokens of the two rows (prompt+chosen +
    prompt+rejected), completion tokens, and prompt tokens (counted twice in the first)."""
    from lit_align.data.pairwise import PairwiseDataModule

    datamodule = PairwiseDataModule(model=args.model, dataset=data, val_fraction=0.05, batch_size=1, max_length=args.max_length, max_prompt_length=args.max_prompt_length)
    datamodule.setup("fit")
    examples = datamodule.train_examples
    real = [2 * len(ex["prompt_ids"]) + len(ex["chosen_ids"]) + len(ex["rejected_ids"]) for ex in examples]
    completion = [len(ex["chosen_ids"]) + len(ex["rejected_ids"]) for ex in examples]
    return statistics.mean(real), statistics.mean(completion), statistics.mean(len(ex["prompt_ids"]) for ex in examples)


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
    print("BENCH " + json.dumps(measure(args)), flush=True)


def measure(args) -> dict:
    """One run (``args.one``) on the pairs in ``args.data``: its figures as a dict."""
    import torch

    torch.set_num_threads(args.threads)
    run = RUNS[args.one]
    cuda = args.accelerator in ("gpu", "cuda")
    baseline_rss = rss_mb()
    timer = StepTimer(args.warmup, cuda)
    info = run_trl(args, run, args.data, timer) if run.algorithm == "trl" else run_lit_align(args, run, args.data, timer)
    step_s = statistics.median(timer.times)
    per_pair, completion_per_pair, prompt_per_pair = tokens_per_pair(args, args.data)
    tokens_per_step = per_pair * args.batch_size
    # Useful FLOPs count the tokens a run must process: with prefix sharing the prompt once per pair.
    processed = per_pair - info.get("shared_fraction", 0.0) * prompt_per_pair
    # LoRA (adapter) runs still back-propagate through every layer: counted like full fine-tuning.
    policy_flops, reference_flops = model_flops_per_pair(args.model, processed, completion_per_pair)
    flops_per_step = args.batch_size * (policy_flops + (reference_flops if run.reference in ("copy", "adapter") else 0))
    dtype = torch.bfloat16 if args.precision.startswith("bf16") else torch.float32
    peak = matmul_peak_flops("cuda" if cuda else "cpu", dtype)
    result = {
        "run": args.one,
        "workload": args.workload,
        "step_s": step_s,
        "pairs_per_s": args.batch_size / step_s,
        "pairs_per_cpu_s": args.batch_size / statistics.median(timer.cpu_times),
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
        "gradient_checkpointing": run.checkpointing,
        "prefix_sharing": run.prefix_sharing,  # a lit_align run's info overrides it with the module's setting
        "prompt_tokens_per_pair": prompt_per_pair,
        "completion_tokens_per_pair": completion_per_pair,
        **info,
    }
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", default=None, help=f"comma-separated subset of {', '.join(RUNS)} (default: the workload's selection)")
    parser.add_argument("--workload", default="short", choices=["short", "long-prompt"], help="short prompts (2-8 words) or long multi-review prompts (~10x the completions)")
    parser.add_argument("--model", default="tiny-llama-32k", help="tiny-llama-32k (random-init Llama, vocabulary 32000, built here), llama-88m (hidden 768, 12 layers: the memory workload), embedded:tiny (vocabulary 93), or a save_pretrained folder")
    parser.add_argument("--examples", type=int, default=512, help="pairs in the workload")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-length", type=int, default=None, help="default: 64 (short), 128 (long-prompt; embedded:tiny allows no more)")
    parser.add_argument("--max-prompt-length", type=int, default=None, help="default: 16 (short), 112 (long-prompt)")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per run")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--accelerator", default="cpu")
    parser.add_argument("--precision", default="32-true")
    parser.add_argument("--out", default=None, help="also write the results as JSON here")
    parser.add_argument("--in-process", action="store_true",
                        help="run every measurement in this process instead of one child each: faster to start (the GPU check's CPU dry run), "
                             "but the peak memory is then the highest so far, not each run's own")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    from benchmarks.workload import MODELS, WORKLOADS, run_child, trl_importable, write_model

    writer, max_length, max_prompt_length = WORKLOADS[args.workload]
    args.max_length = args.max_length or max_length
    args.max_prompt_length = args.max_prompt_length or max_prompt_length
    if args.one:
        return one(args)
    runs = args.runs.split(",") if args.runs else DEFAULT_RUNS[args.workload]
    unknown = [name for name in runs if name not in RUNS]
    if unknown:
        parser.error(f"unknown runs {unknown}; choose from {', '.join(RUNS)}")
    workdir = tempfile.mkdtemp(prefix="lit-align-bench-")
    data = writer(os.path.join(workdir, "pairs.jsonl"), args.examples, seed=0)
    if args.model in MODELS:
        args.model = write_model(os.path.join(workdir, args.model), **MODELS[args.model])
    env = {**os.environ, "LIT_ALIGN_CACHE": os.path.join(workdir, "cache"), "TOKENIZERS_PARALLELISM": "false", "PYTHONWARNINGS": "ignore"}
    results = []
    for name in runs:
        if name.startswith("trl-") and not trl_importable(env):
            print(f"{name}: skipped (TRL not installed; pip install -e '.[trl]')")
            continue
        if args.in_process:
            result = in_process(args, name, data, env)
        else:
            child = [sys.executable, __file__, "--one", name, "--data", data] + [f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items() if k not in ("one", "data", "runs", "out", "in_process") and v is not None]
            result = run_child(child, "BENCH", env, name)
        if result is None:
            continue
        results.append(result)
        r = results[-1]
        print(f"{name:30s} {r['pairs_per_s']:8.1f} pairs/s  {r['pairs_per_cpu_s']:8.1f} pairs/CPU-s  {r['step_s'] * 1000:7.1f} ms/step  peak RSS {r['peak_rss_mb']:6.0f} MB (+{r['rss_rise_mb']:4.0f})  MFU {100 * r['mfu']:5.1f}%", flush=True)
    print(f"\ncommand: python benchmarks/bench_algorithms.py {' '.join(sys.argv[1:])}")
    print_table(results)
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"args": vars(args), "command": sys.argv, "results": results}, f, indent=1)


def in_process(args: argparse.Namespace, name: str, data: str, env: dict[str, str]) -> dict | None:
    """``measure`` for run ``name`` here, under the children's environment; None (and the error) if it fails."""
    saved = dict(os.environ)
    os.environ.update(env)
    try:
        return measure(argparse.Namespace(**{**vars(args), "one": name, "data": data}))
    except Exception as error:  # as a failed child: report it and go on to the next run
        print(f"{name}: FAILED\n{type(error).__name__}: {error}")
        return None
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _trl_for(run: dict, by_name: dict) -> dict | None:
    """The TRL run to compare with: same reference kind (live / precomputed), same checkpointing."""
    precomputed = "precomputed" in run["run"]
    names = (["trl-dpo-precomputed-nogc"] if precomputed else []) + (["trl-dpo"] if run.get("gradient_checkpointing") else ["trl-dpo-nogc"]) + ["trl-dpo-nogc", "trl-dpo"]
    return next((by_name[name] for name in names if name in by_name), None)


def print_table(results: list[dict]) -> None:
    """Markdown table, pairs/s first. "vs TRL" compares like with like: a precomputed run against
    ``trl-dpo-precomputed-nogc`` (when run), checkpointed runs against ``trl-dpo`` (TRL's default),
    the others against ``trl-dpo-nogc``; falling back to whichever TRL run exists."""
    by_name = {r["run"]: r for r in results}
    live = by_name.get("dpo-copy")
    print("\n| run | pairs/s | pairs/s vs TRL | pairs/CPU-s | step (ms) | peak RSS (MB) | peak RSS vs TRL | RSS rise (MB) | MFU | tokens/s | TRL run compared | step vs dpo-copy | grouped | padding |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---|---:|")
    for r in results:
        trl = _trl_for(r, by_name)
        vs_trl = f"{r['pairs_per_s'] / trl['pairs_per_s']:.2f}x" if trl else "-"
        mem_trl = f"{r['peak_rss_mb'] / trl['peak_rss_mb']:.2f}x" if trl else "-"
        vs_live = f"{r['step_s'] / live['step_s']:.2f}x" if live else "-"
        print(
            f"| {r['run']} | {r['pairs_per_s']:.1f} | {vs_trl} | {r['pairs_per_cpu_s']:.1f} | {1000 * r['step_s']:.1f} | {r['peak_rss_mb']:.0f} | {mem_trl} | {r['rss_rise_mb']:.0f} | "
            f"{100 * r['mfu']:.1f}% | {r['tokens_per_s']:.0f} | {trl['run'] if trl else '-'} | {vs_live} | {r.get('group_by_length', '-')} | {r.get('padding_fraction', float('nan')):.2f} |"
        )
    if results:
        first = results[0]
        print(f"\nworkload {first['workload']}: {first['prompt_tokens_per_pair']:.1f} prompt and {first['completion_tokens_per_pair'] / 2:.1f} completion tokens per row on average")
        print(f"matmul peak (1024^2 on CPU, 256^2 for half precision on CPU, 8192^2 on GPU; measured in each run): {statistics.median(r['matmul_peak_flops'] for r in results) / 1e9:.1f} GFLOP/s")


if __name__ == "__main__":
    main()
