"""DDP as a user runs it: ``python -m lit_align fit ... --config configs/trainer/ddp.yaml`` on 2 CPU
processes (gloo), end to end — fit, export, the closing lines, exit 0 — and the same numbers as one
process on the same global batch (2 pairs x 2 ranks vs 4 pairs x 1).

A collective called on rank 0 alone (``trainer.log_dir`` broadcasts) used to kill rank 0 after the
last step with gloo "Connection closed by peer"; tests/test_ddp.py drives a plain Trainer and never
reaches the export or the CLI's closing lines, so only a run through the CLI sees such faults.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from benchmarks.workload import write_pairs
from lit_align.modeling import load_causal_lm
from lit_align.utils.scalars import read_scalars
from tests.conftest import REPO

DPO = os.path.join(REPO, "configs", "dpo.yaml")
DDP = os.path.join(REPO, "configs", "trainer", "ddp.yaml")
GLOBAL_BATCH = 4
# 16 pairs, half held out: 8 training pairs = 2 steps of the global batch, 8 validation pairs (4 per rank).
COMMON = ["--model.init_args.model=embedded:micro", "--data.init_args.val_fraction=0.5", "--data.init_args.max_length=32",
          "--data.init_args.max_prompt_length=12", "--trainer.accelerator=cpu", "--trainer.max_steps=2",
          "--trainer.log_every_n_steps=1", "--trainer.val_check_interval=1.0", "--trainer.num_sanity_val_steps=0",
          "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]


def start(cwd: str, pairs: str, devices: int) -> subprocess.Popen:
    args = ["--config", DPO] + (["--config", DDP] if devices > 1 else []) + COMMON
    args += [f"--data.init_args.dataset={pairs}", f"--data.init_args.batch_size={GLOBAL_BATCH // devices}", f"--trainer.devices={devices}"]
    env = {**os.environ, "PYTHONPATH": REPO, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore", "LIT_ALIGN_DEBUG": ""}
    for name in ("LOCAL_RANK", "RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)  # a fresh launch, not a worker of some outer job
    return subprocess.Popen([sys.executable, "-m", "lit_align", "fit", *args], cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def weights(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


@pytest.mark.slow
def test_ddp_fit_through_the_cli_exports_and_equals_one_process(tmp_path):
    pairs = write_pairs(str(tmp_path / "pairs.jsonl"), 16, seed=5)
    folders = {devices: tmp_path / f"devices{devices}" for devices in (1, 2)}
    for folder in folders.values():
        folder.mkdir()
    # Both runs at once: they are independent, and the test takes the longer one's time, not the sum.
    runs = {devices: start(str(folder), pairs, devices) for devices, folder in folders.items()}
    results = {devices: run.communicate(timeout=600) for devices, run in runs.items()}
    for devices, run in runs.items():
        assert run.returncode == 0, f"{devices} device(s):\n" + results[devices][0][-3000:] + results[devices][1][-3000:]
    stdout = results[2][0]
    log_dir = folders[2] / "runs" / "dpo" / "version_0"
    export = log_dir / "hf_model"
    # The closing lines, printed once (by rank 0), after the export.
    for line in ("lit_align: saved the trained policy (save_pretrained, safetensors) to", "lit_align: final val/loss = ",
                 f"lit_align: TensorBoard logs in {os.path.join('runs', 'dpo', 'version_0')}", "lit_align: checkpoints in "):
        assert stdout.count(line) == 1, (line, stdout[-3000:])
    assert (log_dir / "checkpoints" / "last.ckpt").exists()

    # The export reloads with plain transformers and holds the same weights as the 1-process run's.
    reloaded = AutoModelForCausalLM.from_pretrained(str(export))
    AutoTokenizer.from_pretrained(str(export))
    single = AutoModelForCausalLM.from_pretrained(str(folders[1] / "runs" / "dpo" / "version_0" / "hf_model"))
    start_weights = weights(load_causal_lm("embedded:micro"))
    moved = (weights(single) - start_weights).abs().max()
    assert moved > 1e-5  # two AdamW steps of lr ~1e-4 moved the weights: the comparison below means something
    # fp32, the same arithmetic summed in another order (two half batches + an all-reduce). Almost every
    # weight agrees to ~1e-7, but AdamW divides each gradient by its own magnitude, so an element whose
    # gradient is near zero takes a visibly different fraction of a step: 1.2e-6 on one of 88,192 on an
    # AVX-512 Xeon. So: the bulk to 1e-6, every weight's update to 5% of the largest step. A real fault
    # (a rank's gradient missing, ranks out of sync, another batch) is off by a whole step in many
    # weights. (Summed instead of averaged gradients would pass: AdamW is invariant to their scale.)
    apart = (weights(reloaded) - weights(single)).abs()
    assert (apart > 1e-6).sum().item() <= apart.numel() // 1000, apart.topk(5)
    assert apart.median().item() < 1e-7 and apart.max().item() < 0.05 * moved, (apart.median(), apart.max(), moved)

    # Logged metrics equal the 1-process run's: per step, train/loss (averaged over the ranks) and the
    # train metrics (sum/count states reduced over the ranks); the validation metrics (each pair
    # validated by one rank); the sampled evaluation (same prompts and seed on every rank).
    ddp, one = read_scalars(str(log_dir)), read_scalars(str(folders[1] / "runs" / "dpo" / "version_0"))
    assert [step for step, _ in ddp["train/loss"]] == [0, 1]
    assert ddp["train/loss"][0][1] == pytest.approx(0.6931, abs=1e-4)  # policy == reference at step 0: log 2
    compared = [tag for tag in one if tag.startswith(("train/", "val/", "eval/"))]
    assert {"train/rewards/margins", "train/rewards/accuracies", "train/logps/rejected", "val/loss", "val/rewards/accuracies",
            "val/rewards/margins", "val/logps/chosen", "eval/kl"} <= set(compared)
    for tag in compared:
        assert [s for s, _ in ddp[tag]] == [s for s, _ in one[tag]], tag
        assert [v for _, v in ddp[tag]] == pytest.approx([v for _, v in one[tag]], abs=1e-5, rel=1e-5), tag
