"""Golden trajectories: 20 training steps of each algorithm and reference mode, per-step loss and
every logged ``train/*`` metric, checked against JSON recorded before a refactor (issue 15's guard).

A change that alters numerics on purpose re-records with ``LIT_ALIGN_RECORD_GOLDEN=1 pytest
tests/test_golden.py`` and says why in its commit. Tolerance: 1e-6 (CPU fp32); the values are
bit-identical run to run on one machine, so this only absorbs float differences across CPU types.
"""

from __future__ import annotations

import json
import os

import pytest
import torch
from lightning import Callback, Trainer, seed_everything

from benchmarks.workload import write_pairs
from lit_align.algorithms import BOND, DPO, IPO, JBOND, KTO, ORPO, SFT, ConservativeDPO, OnlineDPO, RewardModel
from lit_align.data.best_of_n import BestOfNDataModule
from lit_align.data.pairwise import PairwiseDataModule
from lit_align.data.sft import SFTDataModule
from lit_align.data.unpaired import UnpairedDataModule

GOLDEN_DIR = os.path.join(os.path.dirname(__file__), "golden")
RECORD = os.environ.get("LIT_ALIGN_RECORD_GOLDEN") == "1"
STEPS = 20
TOLERANCE = 1e-6

# group_by_length pinned: the goldens fix the batch order, whatever the default becomes.
DATA = dict(model="embedded:tiny", max_length=40, max_prompt_length=16, batch_size=4, val_fraction=0.1, seed=0, group_by_length=False)
OPTIMIZER = dict(lr=1e-3, weight_decay=0.0)
# BOND / J-BOND read prompts, not the pairs file; short generations keep the 20 steps quick.
BEST_OF_N = dict(dataset="embedded:prompts", mode="online", num_examples=80, num_val_examples=4, max_new_tokens=6)

# name -> (algorithm class, its arguments, DataModule class, extra DataModule arguments)
CASES = {
    "dpo": (DPO, {"beta": 0.1}, PairwiseDataModule, {}),
    "dpo_nll": (DPO, {"beta": 0.1, "nll_weight": 0.5}, PairwiseDataModule, {}),
    "cdpo": (ConservativeDPO, {"label_smoothing": 0.1}, PairwiseDataModule, {}),
    "ipo": (IPO, {"tau": 0.1}, PairwiseDataModule, {}),
    "ipo_normalized": (IPO, {"tau": 0.1, "length_normalize": True}, PairwiseDataModule, {}),
    "orpo": (ORPO, {"odds_ratio_weight": 0.1}, PairwiseDataModule, {}),
    "kto": (KTO, {"beta": 0.1}, UnpairedDataModule, {"from_pairs": True}),
    "sft": (SFT, {}, SFTDataModule, {"columns": {"completion": "chosen"}}),
    "dpo_head_full": (DPO, {"beta": 0.1, "head_mode": "full"}, PairwiseDataModule, {}),
    "dpo_precomputed": (DPO, {"beta": 0.1, "reference": "precomputed"}, PairwiseDataModule, {}),
    "dpo_adapter": (DPO, {"beta": 0.1, "reference": "adapter"}, PairwiseDataModule, {}),
    # Online sampling from the anchor (the DataModule's prompts, fixed seeds): N = 4 for BOND, 2 for J-BOND.
    "bond": (BOND, {"beta": 0.5, "quantile_samples": 8}, BestOfNDataModule, {"num_samples": 4, **BEST_OF_N}),
    "bond_iterative": (BOND, {"beta": 0.5, "anchor_update_interval": 5}, BestOfNDataModule, {"num_samples": 2, **BEST_OF_N}),
    "jbond": (JBOND, {"beta": 0.5, "kl_weight": 0.1, "anchor_ema": 0.1}, BestOfNDataModule, {"num_samples": 2, **BEST_OF_N}),
    "jbond_variant": (JBOND, {"beta": 0.5, "backward_kl": False}, BestOfNDataModule, {"num_samples": 2, **BEST_OF_N}),
    "online_dpo": (OnlineDPO, {"beta": 0.1, "num_samples": 3}, BestOfNDataModule, {"num_samples": 2, **BEST_OF_N}),
    "reward_model": (RewardModel, {"margin": 0.5, "center_coefficient": 0.01}, PairwiseDataModule, {}),
}


class StepRecorder(Callback):
    """Per optimiser step: the loss and every ``train/*`` value logged at that step."""

    def __init__(self) -> None:
        self.steps: list[dict[str, float]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        values = {"loss": float(outputs["loss"])}
        values.update({k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("train/") and k != "train/loss"})
        self.steps.append(values)


def trajectory(name: str, pairs: str) -> list[dict[str, float]]:
    algorithm, arguments, datamodule_class, data_arguments = CASES[name]
    if arguments.get("reference") == "adapter":
        pytest.importorskip("peft", reason="the adapter reference needs peft (pip install -e .[lora])")
    seed_everything(0)
    module = algorithm(model="embedded:tiny", warmup_ratio=0.0, lr_schedule="constant", optimizer=lambda p: torch.optim.AdamW(p, **OPTIMIZER), **arguments)
    data = datamodule_class(**{"dataset": pairs, **DATA, **data_arguments})
    recorder = StepRecorder()
    trainer = Trainer(
        max_steps=STEPS, limit_val_batches=0, num_sanity_val_steps=0, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, callbacks=[recorder], log_every_n_steps=1,
        gradient_clip_val=1.0, deterministic=True,
    )
    trainer.fit(module, datamodule=data)
    return recorder.steps


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("golden") / "pairs.jsonl")
    write_pairs(path, 120, seed=11)
    return path


@pytest.mark.parametrize("name", sorted(CASES))
def test_golden_trajectory(name, pairs):
    path = os.path.join(GOLDEN_DIR, f"{name}.json")
    steps = trajectory(name, pairs)
    assert len(steps) == STEPS
    if RECORD:
        with open(path, "w") as f:
            json.dump({"steps": steps}, f, indent=1)
        pytest.skip(f"recorded {path}")
    with open(path) as f:
        golden = json.load(f)["steps"]
    assert [sorted(s) for s in steps] == [sorted(s) for s in golden], "the set of logged metrics changed"
    for index, (got, want) in enumerate(zip(steps, golden)):
        for key, value in want.items():
            assert got[key] == pytest.approx(value, rel=TOLERANCE, abs=TOLERANCE), f"step {index}, {key}: {got[key]} != golden {value}"
