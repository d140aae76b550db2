"""The GPU check of issue 17, driven by ``benchmarks/gpu_check.sh``: one table, a few minutes on one large GPU.

* bf16-mixed DPO on a random-init ~0.5B model (Qwen2.5-0.5B's shape: hidden 896, 24 layers, GQA
  14/2 heads, vocabulary 151 936, tied embeddings; 494M parameters) on the long-prompt workload:
  compact vs full LM head, with and without prefix sharing — pairs/s, MFU, peak GPU memory. Each
  run is a ``bench_algorithms.py`` subprocess, so each peak is its own.
* TRL's ``DPOTrainer`` on the same workload when ``trl`` imports (its wheel carried along).
* A Lightning FSDP smoke run on one GPU: 3 DPO steps with ``FSDPStrategy`` (decoder-layer units),
  the policy exported with ``save_pretrained`` by ``ExportPretrained``, reloaded with
  ``AutoModelForCausalLM`` and checked: same parameter count, weights moved from the start.

``LIT_ALIGN_GPU_CHECK_TINY=1`` shrinks everything (hidden 64, 2 layers, 16 pairs, 1 timed step) and
runs on the CPU, every bench run in this process (``--in-process``) — what ``tests/test_gpu_check.py`` dry-runs. Lightning refuses FSDP without a GPU,
so the CPU dry run does the same fit/export/reload with ``strategy="auto"`` and says so in the table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

QWEN_05B = dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True, max_position_embeddings=2048)
TINY = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, vocab_size=1024, tie_word_embeddings=True, max_position_embeddings=256)
RUNS = ["dpo-copy", "dpo-copy-fullhead", "dpo-copy-shared", "dpo-copy-fullhead-shared"]


def write_qwen(path: str, tiny: bool) -> str:
    """A random-init ``Qwen2ForCausalLM`` (fp32 master weights) with the embedded tokenizer, saved to ``path``."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from lit_align.modeling import load_tokenizer

    tokenizer = load_tokenizer("embedded:tiny")
    torch.manual_seed(0)
    config = Qwen2Config(**(TINY if tiny else QWEN_05B), bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    Qwen2ForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def bench(model: str, runs: list[str], tiny: bool, accelerator: str, workdir: str) -> list[dict]:
    out = os.path.join(workdir, "bench.json")
    size = ["--examples", "16", "--batch-size", "2", "--steps", "1", "--warmup", "1"] if tiny else ["--examples", "256", "--batch-size", "8", "--steps", "10", "--warmup", "3"]
    options = ["--model", model, "--workload", "long-prompt", "--runs", ",".join(runs), "--accelerator", accelerator, "--precision", "bf16-mixed", "--out", out, *size]
    if tiny:  # the dry run checks that every run completes, not each one's peak memory: no child processes to start
        from benchmarks import bench_algorithms

        print("$ benchmarks/bench_algorithms.py", " ".join(options), "--in-process", flush=True)
        bench_algorithms.main(options + ["--in-process"])
    else:
        command = [sys.executable, os.path.join(REPO, "benchmarks", "bench_algorithms.py"), *options]
        print("$", " ".join(command[1:]), flush=True)
        proc = subprocess.run(command, cwd=REPO, text=True, capture_output=True)
        print(proc.stdout[-4000:], proc.stderr[-2000:] if proc.returncode else "", flush=True)
    if not os.path.exists(out):
        return []
    with open(out) as f:
        return json.load(f)["results"]


def fsdp_smoke(model: str, tiny: bool, workdir: str) -> dict:
    """3 DPO steps under FSDP (one GPU), export, reload; on CPU the same with strategy auto."""
    import torch
    from lightning import Trainer
    from transformers import AutoModelForCausalLM

    from benchmarks.workload import write_long_prompt_pairs
    from lit_align.algorithms import DPO
    from lit_align.callbacks import ExportPretrained
    from lit_align.data.pairwise import PairwiseDataModule

    gpu = torch.cuda.is_available() and not tiny
    if gpu:
        from lightning.pytorch.strategies import FSDPStrategy

        from lit_align.fsdp import decoder_layers

        strategy, accelerator, label = FSDPStrategy(auto_wrap_policy=decoder_layers, sharding_strategy="FULL_SHARD"), "gpu", "FSDP, 1 GPU"
    else:
        strategy, accelerator, label = "auto", "cpu", "strategy auto on CPU (Lightning runs FSDP only on GPUs)"
    data = write_long_prompt_pairs(os.path.join(workdir, "fsdp_pairs.jsonl"), 32, seed=1)
    export = os.path.join(workdir, "exported")
    module = DPO(model=model, prefix_sharing=True)
    datamodule = PairwiseDataModule(model=model, dataset=data, val_fraction=0.1, batch_size=2, max_length=128, max_prompt_length=112)
    trainer = Trainer(
        accelerator=accelerator, devices=1, strategy=strategy, precision="bf16-mixed", max_steps=3, limit_val_batches=0, num_sanity_val_steps=0,
        logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, default_root_dir=workdir,
        callbacks=[ExportPretrained(also_to=export)],
    )  # fmt: skip
    start = time.perf_counter()
    trainer.fit(module, datamodule)
    reloaded = AutoModelForCausalLM.from_pretrained(export)
    fresh = AutoModelForCausalLM.from_pretrained(model)
    moved = max((a.float() - b.float()).abs().max().item() for a, b in zip(reloaded.state_dict().values(), fresh.state_dict().values()))
    same_size = sum(p.numel() for p in reloaded.parameters()) == sum(p.numel() for p in fresh.parameters())
    return {"label": label, "ok": bool(same_size and moved > 0), "max_weight_change": moved, "seconds": time.perf_counter() - start}


def print_table(results: list[dict], smoke: dict | None, device: str) -> None:
    print(f"\n## GPU check ({device})\n")
    print("| run | head | prefix sharing | pairs/s | step (ms) | MFU | peak GPU memory (MB) |")
    print("|---|---|---|---:|---:|---:|---:|")
    for r in results:
        memory = f"{r['cuda_peak_mb']:.0f}" if r.get("cuda_peak_mb") is not None else "- (CPU)"
        head = "TRL" if r["run"].startswith("trl") else ("full" if "fullhead" in r["run"] else "compact")
        print(f"| {r['run']} | {head} | {'on' if r.get('prefix_sharing') else 'off'} | {r['pairs_per_s']:.2f} | {1000 * r['step_s']:.1f} | {100 * r['mfu']:.1f}% | {memory} |")
    if smoke is not None:
        verdict = "export + reload OK" if smoke["ok"] else "FAILED"
        print(f"| fsdp-smoke ({smoke['label']}) | compact | on | - | {1000 * smoke['seconds']:.0f} (whole run) | - | {verdict}, max weight change {smoke['max_weight_change']:.2e} |")
    print("\nMFU = useful FLOPs / step time / the bf16 matmul rate measured in the same process (8192^2 on GPU).")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--skip-fsdp", action="store_true")
    args = parser.parse_args()
    import torch

    tiny = os.environ.get("LIT_ALIGN_GPU_CHECK_TINY") == "1"
    accelerator = "gpu" if torch.cuda.is_available() and not tiny else "cpu"
    device = torch.cuda.get_device_name(0) if accelerator == "gpu" else "CPU dry run at tiny size" if tiny else "CPU (no GPU found)"
    workdir = tempfile.mkdtemp(prefix="lit-align-gpu-check-")
    os.environ.setdefault("LIT_ALIGN_CACHE", os.path.join(workdir, "cache"))
    model = write_qwen(os.path.join(workdir, "qwen-0.5b-random" if not tiny else "qwen-tiny-random"), tiny)
    has_trl = subprocess.run([sys.executable, "-c", "import trl"], capture_output=True).returncode == 0
    results = bench(model, RUNS + (["trl-dpo-nogc"] if has_trl else []), tiny, accelerator, workdir)
    smoke = None if args.skip_fsdp else fsdp_smoke(model, tiny, workdir)
    print_table(results, smoke, device)
    if not has_trl:
        print("TRL: not installed, no TRL row (carry its wheel to compare).")
    missing = [name for name in RUNS if name not in {r["run"] for r in results}]
    if missing or (smoke is not None and not smoke["ok"]):
        print(f"FAILED: runs without a result {missing}; fsdp smoke ok={None if smoke is None else smoke['ok']}")
        sys.exit(1)


if __name__ == "__main__":
    main()
