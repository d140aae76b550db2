"""Where the memory of DPO training goes, phase by phase: setup, the precompute pass, and each part
of the first training steps, for lit_align (through Lightning, as users run it) and for TRL.

    python benchmarks/memory_profile.py --model llama-88m                          # lit_align and TRL, live and precomputed reference
    python benchmarks/memory_profile.py --model llama-88m --sides lit_align --references copy
    MALLOC_ARENA_MAX=2 python benchmarks/memory_profile.py ...                     # glibc settings apply to the children too
    python benchmarks/memory_profile.py --trim ...                                 # malloc_trim(0) at every phase boundary
    python benchmarks/memory_profile.py --optimizers adamw,bf16                    # lit_align with some of the optimiser settings only

Each configuration runs in a fresh subprocess. At the end of every phase it records:

* **peak RSS in the phase** — Linux's ``VmHWM``, reset at the start of each phase (``5`` written
  to ``/proc/self/clear_refs``), so each phase's own high-water mark is seen, not only the
  process's;
* **RSS** at the end of the phase;
* **malloc in use** — bytes glibc's allocator has handed out (``mallinfo2``: ``uordblks`` +
  ``hblkhd``, all arenas), and **malloc free-held**: freed bytes it keeps in its arenas instead of
  returning them to the OS (``fordblks``) — fragmentation shows here;
* **tensors** — bytes of the tensors we can name: policy weights, reference weights, gradients and
  optimiser state. What RSS holds beyond them is activations, imported code, Python objects and
  allocator slack;
* **page faults** — minor page faults in the phase (thousands): memory the kernel had to map and
  zero. Allocator settings that return memory to the OS sooner pay for it here.

Phases (lit_align): ``imports``, ``policy load`` (``load_start_model``), ``reference build`` (the
deep copy of ``reference: copy``), ``data`` (tokenisation; ``setup("fit")``), ``fit start``
(Lightning set up, optimiser built), ``precompute pass`` (``reference: precomputed``), then for each
profiled step ``forward`` (to ``on_before_backward``), ``backward``, ``optimiser step``. TRL: the
same, with ``trainer init`` (its tokenisation and precompute pass) for ``data``/``fit start``.

lit_align runs once per optimiser setting (``--optimizers``): ``adamw`` (``torch.optim.AdamW``, fused,
as the recipes), ``bf16`` (``lit_align.optim.LowMemoryAdamW``: bf16 moments), ``in-backward``
(``optimizer_in_backward`` with fp32 moments: AdamW's values, no gradient buffer) and
``bf16-in-backward`` (both). TRL runs with its default AdamW.

Peak RSS does not depend on CPU load, so this runs on a busy machine; times are not reported.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import resource
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

MB = 2**20


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]


def _libc():
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallinfo2.restype = _MallInfo2
        return libc
    except (OSError, AttributeError):  # not glibc >= 2.33: malloc columns stay empty
        return None


def _status(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def tensor_bytes(tensors) -> int:
    """Bytes of distinct storages among ``tensors`` (tied weights counted once)."""
    seen, total = set(), 0
    for t in tensors:
        if t is None:
            continue
        storage = t.untyped_storage()
        if storage.data_ptr() not in seen:
            seen.add(storage.data_ptr())
            total += storage.nbytes()
    return total


class Probe:
    """Records one row per phase (see module docstring); ``known`` returns {name: bytes} of named tensors."""

    def __init__(self, trim: bool = False) -> None:
        self.libc, self.trim, self.rows, self.known = _libc(), trim, [], lambda: {}
        self.faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        self.reset()

    def reset(self) -> None:
        # Resets VmHWM to the current RSS (Linux >= 4.0), so the next mark sees this phase's peak only.
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")

    def mark(self, phase: str) -> None:
        peak = _status("VmHWM")
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        row = {"phase": phase, "peak_mb": peak, "rss_mb": _status("VmRSS"), "minor_faults_k": (faults - self.faults) / 1000}
        self.faults = faults
        if self.libc is not None:
            info = self.libc.mallinfo2()
            row["malloc_used_mb"] = (info.uordblks + info.hblkhd) / MB
            row["malloc_free_held_mb"] = info.fordblks / MB
        row.update({k: v / MB for k, v in self.known().items()})
        if self.trim and self.libc is not None:
            self.libc.malloc_trim(0)
        self.rows.append(row)
        self.reset()


def _module_known(module, optimizers) -> dict[str, int]:
    policy = module.policy.policy
    reference = module.policy.reference
    state = [v for opt in optimizers() for s in opt.state.values() for v in s.values() if hasattr(v, "untyped_storage") and v.dim() > 0]
    return {
        "policy_mb": tensor_bytes(policy.parameters()),
        "reference_mb": tensor_bytes(reference.parameters()) if reference is not None else 0,
        "grads_mb": tensor_bytes(p.grad for p in policy.parameters()),
        "optimizer_mb": tensor_bytes(state),
    }


OPTIMIZERS = ("adamw", "bf16", "in-backward", "bf16-in-backward")


def optimizer_setting(name: str) -> dict:
    """DPO's constructor arguments for one ``--optimizers`` entry (see the module docstring)."""
    import torch

    from lit_align.optim import LowMemoryAdamW

    if name == "adamw":
        return {"optimizer": torch.optim.AdamW}
    state_dtype = "bfloat16" if name.startswith("bf16") else "float32"
    return {"optimizer": lambda params: LowMemoryAdamW(params, state_dtype=state_dtype), "optimizer_in_backward": name.endswith("in-backward")}


def profile_lit_align(args, probe: Probe) -> None:
    from lightning import Callback, Trainer

    import lit_align.algorithms as algorithms
    from lit_align.algorithms.base import AlignmentModule
    from lit_align.data.pairwise import PairwiseDataModule

    original = AlignmentModule.load_start_model

    def load_start_model(self):
        model = original(self)
        if not probe.rows or probe.rows[-1]["phase"] == "imports":  # the policy; a later call is the precompute pass's reference
            probe.mark("policy load")
        return model

    AlignmentModule.load_start_model = load_start_model
    if args.free_grads and "optimizer_step" in AlignmentModule.__dict__:
        print("memory_profile: AlignmentModule defines optimizer_step already; --free-grads wraps it (a no-op if it frees them)", file=sys.stderr)
    if args.free_grads:
        # The change proposed for AlignmentModule.optimizer_step, to measure it before it lands:
        # Lightning zeroes gradients only after the next forward, so they would sit beside its activations.
        step = AlignmentModule.optimizer_step

        def optimizer_step(self, epoch, batch_idx, optimizer, optimizer_closure=None):
            step(self, epoch, batch_idx, optimizer, optimizer_closure)
            optimizer.zero_grad(set_to_none=True)

        AlignmentModule.optimizer_step = optimizer_step
    setting = optimizer_setting(args.optimizer)
    module = algorithms.DPO(model=args.model, reference=args.reference, reference_batch_size=64, prefix_sharing=args.prefix_sharing, **setting)
    probe.known = lambda: _module_known(module, lambda: module.trainer.optimizers if module._trainer is not None else [])
    probe.mark("reference build" if args.reference == "copy" else "module init")
    datamodule = PairwiseDataModule(model=args.model, dataset=args.data, val_fraction=0.05, batch_size=args.batch_size, max_length=args.max_length, max_prompt_length=args.max_prompt_length)
    datamodule.setup("fit")
    probe.mark("data")
    steps = {"n": 0}

    class Phases(Callback):
        def on_fit_start(self, *a) -> None:  # Lightning set up, optimiser built (its state comes at the first step)
            probe.mark("fit setup")

        def on_train_start(self, *a) -> None:  # after the module's on_fit_start: the precompute pass
            probe.mark("precompute pass" if args.reference == "precomputed" else "train start")

        def on_train_batch_start(self, *a) -> None:
            probe.mark(f"step {steps['n'] + 1}: batch") if steps["n"] < args.profile_steps else None

        def on_before_backward(self, *a) -> None:
            probe.mark(f"step {steps['n'] + 1}: forward") if steps["n"] < args.profile_steps else None

        def on_after_backward(self, *a) -> None:
            probe.mark(f"step {steps['n'] + 1}: backward") if steps["n"] < args.profile_steps else None

        def on_train_batch_end(self, *a) -> None:
            steps["n"] += 1
            if steps["n"] <= args.profile_steps:
                probe.mark(f"step {steps['n']}: optimiser step")

    trainer = Trainer(
        accelerator="cpu", devices=1, precision="32-true", max_steps=args.steps, limit_val_batches=0, num_sanity_val_steps=0,
        logger=args.logger, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, callbacks=[Phases()],
        default_root_dir=tempfile.mkdtemp(prefix="memory-profile-"),
    )
    trainer.fit(module, datamodule)
    if args.steps > args.profile_steps:
        probe.mark(f"steps {args.profile_steps + 1}-{args.steps}")


def profile_trl(args, probe: Probe) -> None:
    import copy

    from datasets import load_dataset
    from transformers import TrainerCallback
    from trl import DPOConfig, DPOTrainer

    from lit_align.modeling import load_causal_lm, load_tokenizer

    tokenizer = load_tokenizer(args.model)
    policy = load_causal_lm(args.model, tokenizer)
    probe.mark("policy load")
    holder: dict = {}

    def known() -> dict[str, int]:
        trainer = holder.get("trainer")
        reference = trainer.ref_model if trainer is not None else holder.get("reference")
        optimizer = getattr(trainer, "optimizer", None) if trainer is not None else None
        state = [v for s in (optimizer.state.values() if optimizer is not None else []) for v in s.values() if hasattr(v, "untyped_storage") and v.dim() > 0]
        return {
            "policy_mb": tensor_bytes(policy.parameters()),
            "reference_mb": tensor_bytes(reference.parameters()) if reference is not None else 0,
            "grads_mb": tensor_bytes(p.grad for p in policy.parameters()),
            "optimizer_mb": tensor_bytes(state),
        }

    probe.known = known
    # Live reference: a frozen copy, as TRL builds from a hub name. Precomputed: none, as TRL does
    # (its precompute pass runs the not-yet-trained policy itself).
    holder["reference"] = copy.deepcopy(policy).eval().requires_grad_(False) if args.reference == "copy" else None
    probe.mark("reference build" if args.reference == "copy" else "module init")
    dataset = load_dataset("json", data_files=args.data, split="train")
    config = DPOConfig(
        output_dir=tempfile.mkdtemp(prefix="memory-profile-trl-"), per_device_train_batch_size=args.batch_size, max_steps=args.steps,
        learning_rate=5e-5, beta=0.1, max_length=args.max_length, precompute_ref_log_probs=args.reference == "precomputed",
        precompute_ref_batch_size=64, report_to=[], save_strategy="no", logging_strategy="no", use_cpu=True,
        dataloader_num_workers=0, gradient_checkpointing=False, seed=0, disable_tqdm=True,
    )
    steps = {"n": 0}

    class Phases(TrainerCallback):
        def on_train_begin(self, *a, **k) -> None:
            probe.mark("fit start")

        def on_step_begin(self, *a, **k) -> None:
            probe.mark(f"step {steps['n'] + 1}: batch") if steps["n"] < args.profile_steps else None

        def on_pre_optimizer_step(self, *a, **k) -> None:
            probe.mark(f"step {steps['n'] + 1}: backward") if steps["n"] < args.profile_steps else None

        def on_step_end(self, *a, **k) -> None:
            steps["n"] += 1
            if steps["n"] <= args.profile_steps:
                probe.mark(f"step {steps['n']}: optimiser step")

    trainer = DPOTrainer(model=policy, ref_model=holder["reference"], args=config, train_dataset=dataset, processing_class=tokenizer, callbacks=[Phases()])
    holder["trainer"] = trainer
    probe.mark("trainer init (data)")
    compute_loss = trainer.compute_loss

    def compute_loss_then_mark(*a, **k):
        out = compute_loss(*a, **k)
        if steps["n"] < args.profile_steps:
            probe.mark(f"step {steps['n'] + 1}: forward")
        return out

    trainer.compute_loss = compute_loss_then_mark
    trainer.train()
    if args.steps > args.profile_steps:
        probe.mark(f"steps {args.profile_steps + 1}-{args.steps}")


def child(args) -> None:
    import torch

    torch.set_num_threads(args.threads)
    # Libraries first, so "imports" holds all imported code and later phases only what they build.
    import transformers.models.llama.modeling_llama  # noqa: F401

    if args.side == "trl":
        import datasets  # noqa: F401
        import trl.trainer.dpo_trainer  # noqa: F401
    else:
        import lightning  # noqa: F401

        import lit_align.algorithms  # noqa: F401
        import lit_align.data.pairwise  # noqa: F401
    probe = Probe(trim=args.trim)
    probe.mark("imports")
    (profile_trl if args.side == "trl" else profile_lit_align)(args, probe)
    peak = max(row["peak_mb"] for row in probe.rows)
    optimizer = args.optimizer if args.side == "lit_align" else "AdamW (TRL's default)"
    print("PROFILE " + json.dumps({"side": args.side, "reference": args.reference, "optimizer": optimizer, "peak_mb": peak, "rows": probe.rows}), flush=True)


COLUMNS = [("peak_mb", "peak RSS in phase"), ("rss_mb", "RSS after"), ("malloc_used_mb", "malloc in use"), ("malloc_free_held_mb", "malloc free-held"), ("policy_mb", "policy"), ("reference_mb", "reference"), ("grads_mb", "grads"), ("optimizer_mb", "optimiser state"), ("minor_faults_k", "page faults (k)")]


def print_profile(result: dict) -> None:
    print(f"\n### {result['side']}, reference {result['reference']}, optimiser {result['optimizer']}: peak RSS {result['peak_mb']:.0f} MB\n")
    print("| phase | " + " | ".join(title if "(" in title else f"{title} (MB)" for _, title in COLUMNS) + " |")
    print("|---|" + "---:|" * len(COLUMNS))
    for row in result["rows"]:
        print(f"| {row['phase']} | " + " | ".join(f"{row[key]:.0f}" if key in row else "-" for key, _ in COLUMNS) + " |")


def print_summary(results: list[dict]) -> None:
    """Peak RSS per configuration, and its ratio to TRL's live-reference and same-reference runs."""
    trl = {r["reference"]: r["peak_mb"] for r in results if r["side"] == "trl"}
    print("\n| side | optimiser | reference | peak RSS (MB) | x TRL live | x TRL same reference |\n|---|---|---|---:|---:|---:|")
    for r in results:
        live, same = (f"{r['peak_mb'] / base:.2f}" if base else "-" for base in (trl.get("copy"), trl.get(r["reference"])))
        print(f"| {r['side']} | {r['optimizer']} | {r['reference']} | {r['peak_mb']:.0f} | {live} | {same} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="llama-88m", help="llama-88m (the memory workload), tiny-llama-32k, embedded:tiny or a save_pretrained folder")
    parser.add_argument("--workload", default="short", choices=["short", "long-prompt"])
    parser.add_argument("--sides", default="lit_align,trl", help="lit_align and/or trl (TRL rows need trl importable, e.g. PYTHONPATH=/tmp/trl_env)")
    parser.add_argument("--references", default="copy,precomputed", help="copy and/or precomputed")
    parser.add_argument("--examples", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=16, help="pairs per batch (bench_algorithms.py's default)")
    parser.add_argument("--steps", type=int, default=4, help="training steps (the last ones as one phase)")
    parser.add_argument("--profile-steps", type=int, default=2, help="steps profiled phase by phase")
    parser.add_argument("--optimizers", default=",".join(OPTIMIZERS), help=f"lit_align's optimiser settings, each one run: some of {', '.join(OPTIMIZERS)}")
    parser.add_argument("--prefix-sharing", action="store_true")
    parser.add_argument("--logger", action="store_true", help="lit_align with Lightning's default TensorBoard logger (as the CLI runs)")
    parser.add_argument("--trim", action="store_true", help="malloc_trim(0) at each phase boundary")
    parser.add_argument("--free-grads", action="store_true", help="lit_align: free the gradients right after each optimiser step (as TRL/HF Trainer does); built into AlignmentModule since d9466cf, kept to measure code from before it")
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--out", help="also write the results as JSON here")
    parser.add_argument("--side", help=argparse.SUPPRESS)
    parser.add_argument("--reference", help=argparse.SUPPRESS)
    parser.add_argument("--optimizer", default="adamw", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--max-length", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--max-prompt-length", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        return child(args)

    from benchmarks.workload import MODELS, WORKLOADS, run_child, trl_importable, write_model

    writer, args.max_length, args.max_prompt_length = WORKLOADS[args.workload]
    workdir = tempfile.mkdtemp(prefix="lit-align-memory-")
    data = writer(os.path.join(workdir, "pairs.jsonl"), args.examples, seed=0)
    model = write_model(os.path.join(workdir, args.model), **MODELS[args.model]) if args.model in MODELS else args.model
    env = {**os.environ, "LIT_ALIGN_CACHE": os.path.join(workdir, "cache"), "TOKENIZERS_PARALLELISM": "false", "PYTHONWARNINGS": "ignore", "HF_DATASETS_CACHE": os.path.join(workdir, "datasets")}
    results = []
    for side in args.sides.split(","):
        if side == "trl" and not trl_importable(env):
            print("trl: skipped (not importable; PYTHONPATH=/tmp/trl_env or pip install -e '.[trl]')")
            continue
        for reference in args.references.split(","):
            for optimizer in args.optimizers.split(",") if side == "lit_align" else ["adamw"]:
                command = [sys.executable, __file__, "--side", side, "--reference", reference, "--optimizer", optimizer, "--data", data, "--model", model, "--max-length", str(args.max_length), "--max-prompt-length", str(args.max_prompt_length)]
                command += [f"--{k}={v}" for k, v in (("batch-size", args.batch_size), ("steps", args.steps), ("profile-steps", args.profile_steps), ("threads", args.threads))]
                command += [flag for flag, on in (("--prefix-sharing", args.prefix_sharing), ("--logger", args.logger), ("--trim", args.trim), ("--free-grads", args.free_grads)) if on]
                result = run_child(command, "PROFILE", env, f"{side} / {reference} / {optimizer}")
                if result is None:
                    continue
                results.append(result)
                print_profile(results[-1])
    print(f"\ncommand: python benchmarks/memory_profile.py {' '.join(sys.argv[1:])}")
    print_summary(results)
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"args": vars(args), "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
