"""Golden trajectories: 20 training steps of each algorithm and reference mode, per-step loss and
every logged ``train/*`` metric, checked against JSON recorded before a refactor (issues 15, 24).

A change that alters numerics on purpose re-records with ``LIT_ALIGN_RECORD_GOLDEN=1 pytest
tests/test_golden.py`` and says why in its commit.

Portable across CPUs (issue 24):

* **Sampled algorithms replay recorded samples.** While recording, every call of the single
  sampling entry of the online algorithms (``SAMPLER``: ``OnlineSampling.sample``) is stored in the
  golden file with its arguments and result; in replay that method returns the recorded samples in
  call order, after checking that the call asked for the same thing (the model's role, the prompt
  ids, the number of samples, the seed). A sampled token can then no longer flip on another CPU,
  while a change in what is sampled, from which model, for which prompts, still fails. Every case
  goes through the same replay, so a new online method (RLOO, GRPO, PPO) is one line in ``CASES``.
* **The tolerance is set by fp32 rounding, not guessed.** With the samples fixed, two CPUs differ
  only in the order of fp32 sums: SIMD width (AVX-512 / AVX2 / scalar ``default`` kernels) and
  the split over threads. One forward's relative error is about eps = 2^-23 = 1.2e-7 per value
  (blocked and pairwise sums keep it near eps, not n * eps); each optimiser step feeds the
  previous step's error into the weights, so after s steps it has grown to about s * eps, and a
  logged value that is a condition-number kappa function of the log-probs (a DPO loss of beta
  times a difference of four log-probs of ~30 nats: kappa ~ 4 * 30 * beta / 0.7 ~ 17) moves by
  about kappa * s * eps. With s = 20 and kappa = 20 that is 20 * 20 * eps = 4.8e-5 relative at the
  last step (2.4e-6 at the first) — about 3x above the measured spread below, and still 2x under
  the 1e-4 relative change ``test_planted_change_fails`` proves is caught (20x and more in the
  first steps it runs). Values that cancel to ~0 (a KL of identical models, a mean reward of +-r)
  are allowed the error of a unit-sized operand (the ``+ 1`` below).
  The allowance grows with the step: ``allowed(step, v) = (step + 1) * KAPPA * eps * (|v| + 1)``.
  Measured on an AMD EPYC (AVX2, no AVX-512), torch 2.13, replaying the recorded samples, against
  the goldens recorded there (AVX2 kernels, 2 threads): ``ATEN_CPU_CAPABILITY=default`` with 1
  thread moved a logged value by at most 0.42 of ``allowed`` (bond_iterative's KL at step 3:
  4.3e-6 on 0.068, a difference of two ~30-nat log-probs) and at most 4.3e-5 relative on any value
  above 0.05 (dpo_head_full; bond 1.7e-5, cdpo 1.7e-5, sft 6.9e-7), i.e. about 0.3 of the
  allowance; ``avx2`` with 1 thread matched bit for bit. (Cases measured in time: bond,
  bond_iterative, cdpo, dpo_head_full, sft, reward_model; see COMPARED_STEPS for the last.)
* **Threshold decisions are compared where rounding cannot flip them** (``BoundaryTape``). A
  metric that counts decisions (accuracies: margin > 0; clip fractions: the ratio or the value
  change past its clip) may differ by the share of decisions whose input lay within ``allowed`` of
  the threshold in this run: at a tie, such as DPO's margins at step 0 against a precomputed
  reference, that is all of them. A decision that enters the loss (a clip switches a token's
  gradient off) ends the comparison at its step, since after a flip the update differs by a finite
  amount. (No case reaches that on this machine: PPO's value clip used to count the rounding of
  V_old + (V - V_old) as a clip; ``clipped_value_loss`` now requires the clamp to bind.)
* **The recording machine is in each file** (``machine``: CPU model, torch's kernel capability,
  torch version), and a failure names it next to this machine.
"""

from __future__ import annotations

import json
import os
import platform
from typing import Any, Callable

import pytest
import torch
from lightning import Callback, Trainer, seed_everything

from benchmarks.workload import write_pairs
from lit_align.algorithms import BOND, DPO, GRPO, IPO, JBOND, KTO, ORPO, PPO, RLOO, SFT, ConservativeDPO, OnlineDPO, RewardModel
import lit_align.algorithms.ppo as ppo_module
import lit_align.online.estimators as estimators_module
from lit_align.metrics import KTOMetrics, PreferenceMetrics, RewardModelMetrics
from lit_align.online import PromptDataModule
from lit_align.online.sampling import OnlineSampling
from lit_align.data.best_of_n import BestOfNDataModule
from lit_align.data.pairwise import PairwiseDataModule
from lit_align.data.sft import SFTDataModule
from lit_align.data.unpaired import UnpairedDataModule

GOLDEN_DIR = os.path.join(os.path.dirname(__file__), "golden")
RECORD = os.environ.get("LIT_ALIGN_RECORD_GOLDEN") == "1"
STEPS = 20
EPS = 2.0**-23  # fp32 machine epsilon
KAPPA = 20  # condition number of a logged value in the log-probs: see the module docstring
# Cases whose trajectory amplifies rounding exponentially compare only their first steps, so that a
# longer comparison does not test the CPU instead of the code. Both train a scalar head from scratch
# under Adam, whose update m / (sqrt(v) + eps) turns a gradient that is rounding noise into a
# lr-sized step of either sign. Measured between the default and AVX2 kernels of one machine:
# the reward model grows ~4x per step from step 13 (0.35 of ``allowed`` at step 12, 10x at 13, 8800x
# at 18); PPO's critic weights drift apart 7e-5 -> 4e-3 over steps 7-12 (max |dw| of the critic's
# embedding), and the logged values go from <= 0.29 of ``allowed`` up to step 9 to 2x at 10, 600x at 13.
COMPARED_STEPS = {"reward_model": 12, "ppo": 10}
# The single sampling entry of every online algorithm; the replay patches it (retarget here if it moves).
SAMPLER = (OnlineSampling, "sample")

# group_by_length and prefix_sharing pinned: the goldens fix the batch order and the forward's layout, whatever the defaults become.
DATA = dict(model="embedded:tiny", max_length=40, max_prompt_length=16, batch_size=4, val_fraction=0.1, seed=0, group_by_length=False)
PAIRWISE = dict(prefix_sharing=False)
OPTIMIZER = dict(lr=1e-3, weight_decay=0.0)
# BOND / J-BOND read prompts, not the pairs file; short generations keep the 20 steps quick.
BEST_OF_N = dict(dataset="embedded:prompts", mode="online", num_examples=80, num_val_examples=4, max_new_tokens=6)
PROMPTS = dict(dataset="embedded:prompts", num_examples=80, num_val_examples=4, max_new_tokens=6)

# name -> (algorithm class, its arguments, DataModule class, extra DataModule arguments)
CASES = {
    "dpo": (DPO, {"beta": 0.1, **PAIRWISE}, PairwiseDataModule, {}),
    "dpo_nll": (DPO, {"beta": 0.1, "nll_weight": 0.5, **PAIRWISE}, PairwiseDataModule, {}),
    "cdpo": (ConservativeDPO, {"label_smoothing": 0.1, **PAIRWISE}, PairwiseDataModule, {}),
    "ipo": (IPO, {"tau": 0.1, **PAIRWISE}, PairwiseDataModule, {}),
    "ipo_normalized": (IPO, {"tau": 0.1, "length_normalize": True, **PAIRWISE}, PairwiseDataModule, {}),
    "orpo": (ORPO, {"odds_ratio_weight": 0.1, "nll_tokens": "completion", **PAIRWISE}, PairwiseDataModule, {}),
    "kto": (KTO, {"beta": 0.1}, UnpairedDataModule, {"from_pairs": True}),
    "sft": (SFT, {}, SFTDataModule, {"columns": {"completion": "chosen"}}),
    "dpo_head_full": (DPO, {"beta": 0.1, "head_mode": "full", **PAIRWISE}, PairwiseDataModule, {}),
    "dpo_precomputed": (DPO, {"beta": 0.1, "reference": "precomputed", **PAIRWISE}, PairwiseDataModule, {}),
    "dpo_adapter": (DPO, {"beta": 0.1, "reference": "adapter", **PAIRWISE}, PairwiseDataModule, {}),
    # Online sampling (replayed from the golden file): N = 4 anchor samples for BOND, 2 for J-BOND.
    "bond": (BOND, {"beta": 0.5, "quantile_samples": 8}, BestOfNDataModule, {"num_samples": 4, **BEST_OF_N}),
    "bond_iterative": (BOND, {"beta": 0.5, "anchor_update_interval": 5}, BestOfNDataModule, {"num_samples": 2, **BEST_OF_N}),
    "jbond": (JBOND, {"beta": 0.5, "kl_weight": 0.1, "anchor_ema": 0.1}, BestOfNDataModule, {"num_samples": 2, **BEST_OF_N}),
    "jbond_variant": (JBOND, {"beta": 0.5, "backward_kl": False}, BestOfNDataModule, {"num_samples": 2, **BEST_OF_N}),
    "online_dpo": (OnlineDPO, {"beta": 0.1, "num_samples": 3, **PAIRWISE}, BestOfNDataModule, {"num_samples": 2, **BEST_OF_N}),
    # RL from the gold reward (replayed samples): GRPO and PPO reuse each rollout (2 epochs x 2 minibatches),
    # so the importance ratio against the sampling log-probs and the clipping are on the trajectory.
    "rloo": (RLOO, {"kl_coef": 0.05}, PromptDataModule, {"num_samples": 2, **PROMPTS}),
    "grpo": (GRPO, {"kl_coef": 0.04, "num_epochs": 2, "num_minibatches": 2}, PromptDataModule, {"num_samples": 4, **PROMPTS}),
    "ppo": (PPO, {"kl_coef": 0.05, "num_epochs": 2, "num_minibatches": 2}, PromptDataModule, {"num_samples": 1, **PROMPTS}),
    "reward_model": (RewardModel, {"margin": 0.5, "center_coefficient": 0.01}, PairwiseDataModule, {}),
}


def this_machine() -> dict[str, str]:
    """What decides fp32 rounding here: the CPU, the kernels torch picked for it, torch's version."""
    cpu = platform.processor() or platform.machine()
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    return {"cpu": cpu, "capability": torch.backends.cpu.get_cpu_capability(), "torch": torch.__version__, "threads": str(torch.get_num_threads())}


class StepRecorder(Callback):
    """Per optimiser step: the loss and every ``train/*`` value logged at that step."""

    def __init__(self) -> None:
        self.steps: list[dict[str, float]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        values = {"loss": float(outputs["loss"])}
        values.update({k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("train/") and k != "train/loss"})
        self.steps.append(values)


def model_role(module: Any, model: Any) -> str:
    """Which of the module's models is sampled: the policy, the reference (anchor), or another (a snapshot)."""
    holder = module.policy
    if model is holder.policy:
        return "policy"
    return "reference" if model is getattr(holder, "reference", None) else "other"


class SampleTape:
    """Records the sampler's calls (arguments and samples), or replays recorded ones in call order."""

    def __init__(self, calls: list[dict[str, Any]] | None = None) -> None:
        self.replay = calls is not None
        self.calls = list(calls or [])
        self.used = 0

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        owner, name = SAMPLER
        original = getattr(owner, name)
        tape = self

        def sample(module, model, prompt_ids, num_samples, seed):
            asked = {"model": model_role(module, model), "prompt_ids": [list(p) for p in prompt_ids], "num_samples": int(num_samples), "seed": int(seed)}
            if not tape.replay:
                samples = original(module, model, prompt_ids, num_samples, seed)
                tape.calls.append({**asked, "samples": samples})
                return samples
            assert tape.used < len(tape.calls), f"sampling call {tape.used} was not recorded (the golden has {len(tape.calls)}): {asked}"
            recorded = tape.calls[tape.used]
            for key, value in asked.items():
                assert value == recorded[key], f"sampling call {tape.used} asks for {key} {value}, the golden recorded {recorded[key]}"
            tape.used += 1
            return [[list(c) for c in per_prompt] for per_prompt in recorded["samples"]]

        monkeypatch.setattr(owner, name, sample)

    def check_all_used(self) -> None:
        if self.replay:
            assert self.used == len(self.calls), f"{self.used} sampling calls, the golden recorded {len(self.calls)}"


def trajectory(name: str, pairs: str, monkeypatch: pytest.MonkeyPatch, steps: int = STEPS) -> tuple[list[dict[str, float]], BoundaryTape]:
    """The case's per-step values, and the threshold decisions taken near their thresholds on the way."""
    algorithm, arguments, datamodule_class, data_arguments = CASES[name]
    if arguments.get("reference") == "adapter":
        pytest.importorskip("peft", reason="the adapter reference needs peft (pip install -e .[lora])")
    recorder = StepRecorder()
    boundaries = BoundaryTape(lambda: len(recorder.steps))
    boundaries.install(monkeypatch)  # before the module builds its metrics
    seed_everything(0)
    module = algorithm(model="embedded:tiny", warmup_ratio=0.0, lr_schedule="constant", optimizer=lambda p: torch.optim.AdamW(p, **OPTIMIZER), **arguments)
    data = datamodule_class(**{"dataset": pairs, **DATA, **data_arguments})
    trainer = Trainer(
        max_steps=steps, limit_val_batches=0, num_sanity_val_steps=0, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, callbacks=[recorder], log_every_n_steps=1,
        gradient_clip_val=1.0, deterministic=True,
    )
    trainer.fit(module, datamodule=data)
    return recorder.steps, boundaries


def golden_path(name: str) -> str:
    return os.path.join(GOLDEN_DIR, f"{name}.json")


def load_golden(name: str) -> dict[str, Any]:
    with open(golden_path(name)) as f:
        return json.load(f)


def write_golden(name: str, steps: list[dict[str, float]], calls: list[dict[str, Any]]) -> None:
    """One step and one sampling call per line, so a re-record diffs readably."""

    def lines(items: list[Any]) -> str:
        return "[\n" + ",\n".join("  " + json.dumps(item, separators=(",", ":")) for item in items) + "\n ]" if items else "[]"

    with open(golden_path(name), "w") as f:
        f.write(f'{{\n "machine": {json.dumps(this_machine())},\n "steps": {lines(steps)},\n "sampling_calls": {lines(calls)}\n}}\n')


def allowed(step: int, value: float) -> float:
    """fp32 rounding a value at 0-based ``step`` may carry: (step + 1) * KAPPA * eps, relative to
    |value| + 1 (the 1: a value that cancels to ~0 is rounded like a unit-sized one)."""
    return (step + 1) * KAPPA * EPS * (abs(value) + 1.0)


# Metrics that count decisions on a threshold, and the decision each counts.
THRESHOLDED = {"train/rewards/accuracies": "margin", "train/clip_fraction": "ratio_clip", "train/value_clip_fraction": "value_clip"}


class BoundaryTape:
    """Decisions taken on a threshold whose input lay within rounding of it, per step.

    A decision (a margin > 0, a ratio past 1 + eps, a value change past eps_v) is a discontinuous
    function of a continuous input. Two CPUs whose inputs differ by at most ``allowed`` can take it
    differently only where this run's input lies within ``allowed`` of the threshold, so:

    * a metric counting such decisions may differ by (decisions near the threshold) / (decisions),
      the largest share among the step's calls (``tolerance``); at a tie (DPO's margins at step 0,
      where policy and a precomputed reference agree up to rounding) that is all of them;
    * a decision that enters the loss (a clip binding switches off a token's gradient) changes the
      update by a finite amount once it flips, so no rounding argument covers the steps after it:
      the comparison ends at the step where such a decision was near its threshold (``horizon``).
    """

    def __init__(self, step: Callable[[], int]) -> None:
        self.step = step
        self.shares: dict[tuple[int, str], float] = {}
        self.first_in_loss: int | None = None

    def note(self, kind: str, distance: torch.Tensor, scale: torch.Tensor, enters_loss: bool) -> None:
        if distance.numel() == 0:
            return
        step = self.step()
        # ``allowed`` elementwise: the input's rounding, relative to its own scale plus one.
        near = distance.detach().double() <= (step + 1) * KAPPA * EPS * (scale.detach().double().abs() + 1.0)
        share = float(near.double().mean())
        self.shares[(step, kind)] = max(share, self.shares.get((step, kind), 0.0))
        if enters_loss and share > 0 and self.first_in_loss is None:
            self.first_in_loss = step

    def tolerance(self, step: int, key: str) -> float:
        return self.shares.get((step, THRESHOLDED[key]), 0.0) if key in THRESHOLDED else 0.0

    def horizon(self, steps: int) -> int:
        """Steps compared: those before the first step whose loss took a near-threshold decision."""
        return steps if self.first_in_loss is None else min(steps, self.first_in_loss)

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        tape = self
        surrogate, value_loss = estimators_module.clipped_surrogate, ppo_module.clipped_value_loss

        def clipped_surrogate(logps, old_logps, advantages, clip_low=0.2, clip_high=None):
            out = surrogate(logps, old_logps, advantages, clip_low, clip_high)
            if clip_low is not None:
                high = clip_low if clip_high is None else clip_high
                edge = torch.where(advantages > 0, 1.0 + high, 1.0 - clip_low)
                # rho = exp(d log pi): its rounding is rho times that of the log-probs it exponentiates.
                distance = torch.where(advantages != 0, (out.ratio - edge).abs() / out.ratio, torch.inf)
                tape.note("ratio_clip", distance, torch.maximum(logps.abs(), old_logps.abs()), enters_loss=True)
            return out

        def clipped_value_loss(values, old_values, returns, clip=0.2):
            losses, clipped = value_loss(values, old_values, returns, clip)
            if clip is not None:
                change = values - old_values
                # Two thresholds: |V - V_old| = eps_v, and (where clamped) |clipped - R| = |V - R|.
                errors = (old_values + torch.clamp(change, -clip, clip) - returns).abs() - (values - returns).abs()
                distance = torch.minimum((change.abs() - clip).abs(), torch.where(change.abs() > clip, errors.abs(), torch.inf))
                tape.note("value_clip", distance, torch.maximum(values.abs(), returns.abs()), enters_loss=True)
            return losses, clipped

        def margins(update, rewards_of):
            def wrapped(metric, *args, **kwargs):
                margin, scale = rewards_of(*args, **kwargs)
                tape.note("margin", margin.abs(), scale, enters_loss=False)
                return update(metric, *args, **kwargs)
            return wrapped

        def pair_margins(chosen, rejected, *rest, **kwargs):
            return chosen - rejected, torch.maximum(chosen.abs(), rejected.abs())

        def kto_margins(rewards, desirable, policy_logps, kl, beta):
            return rewards - beta * kl, rewards.abs()

        monkeypatch.setattr(estimators_module, "clipped_surrogate", clipped_surrogate)
        monkeypatch.setattr(ppo_module, "clipped_value_loss", clipped_value_loss)
        for metric, rewards_of in ((PreferenceMetrics, pair_margins), (RewardModelMetrics, pair_margins), (KTOMetrics, kto_margins)):
            monkeypatch.setattr(metric, "update", margins(metric.update, rewards_of))


def mismatches(steps: list[dict[str, float]], golden: list[dict[str, float]], boundaries: BoundaryTape) -> list[str]:
    """Every value off the golden by more than ``allowed`` (plus, for a metric counting threshold
    decisions, the share taken near the threshold), over the steps the boundaries leave comparable,
    and any change in which metrics are logged."""
    problems = []
    if [sorted(s) for s in steps] != [sorted(s) for s in golden[: len(steps)]]:
        problems.append(f"the logged metrics changed: {[sorted(s) for s in steps][:1]} != golden {[sorted(s) for s in golden][:1]}")
    for index, (got, want) in enumerate(zip(steps[: boundaries.horizon(len(steps))], golden)):
        for key, value in want.items():
            limit = allowed(index, value) + boundaries.tolerance(index, key)
            if key in got and not abs(got[key] - value) <= limit:
                problems.append(f"step {index}, {key}: {got[key]!r} != golden {value!r} (off by {abs(got[key] - value):.3g}, allowed {limit:.3g})")
    return problems


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("golden") / "pairs.jsonl")
    write_pairs(path, 120, seed=11)
    return path


@pytest.mark.parametrize("name", sorted(CASES))
def test_golden_trajectory(name, pairs, monkeypatch):
    golden = None if RECORD else load_golden(name)
    # A file from before issue 24 has neither: its samples must be re-recorded (the replay then says so).
    tape = SampleTape(None if golden is None else golden.get("sampling_calls", []))
    tape.install(monkeypatch)
    steps, boundaries = trajectory(name, pairs, monkeypatch)
    assert len(steps) == STEPS
    if golden is None:
        write_golden(name, steps, tape.calls)
        pytest.skip(f"recorded {golden_path(name)}")
    tape.check_all_used()
    problems = mismatches(steps[: COMPARED_STEPS.get(name, STEPS)], golden["steps"], boundaries)
    compared = boundaries.horizon(COMPARED_STEPS.get(name, STEPS))
    assert not problems, f"recorded on {golden.get('machine', 'an unrecorded machine')}, run on {this_machine()}, {compared} steps compared:\n" + "\n".join(problems[:10])


# (case, logged loss term): a cheap pairwise case, and the terms of the sampled objectives.
PLANTED = [("dpo", "loss"), ("bond", "forward_loss"), ("bond", "backward_loss"), ("bond_iterative", "backward_loss")]
PLANTED_STEPS = 3


@pytest.mark.skipif(RECORD, reason="compares against the goldens being recorded")
@pytest.mark.parametrize(("name", "term"), PLANTED)
def test_planted_change_fails(name, term, pairs, monkeypatch):
    """A 1e-4 relative change of one loss term (the total ``loss`` or a logged part of it, which
    then also enters the loss) is reported by the golden comparison: ``allowed`` sits below 1e-4."""
    golden = load_golden(name)
    SampleTape(golden["sampling_calls"]).install(monkeypatch)
    algorithm = CASES[name][0]
    compute_loss = algorithm.compute_loss

    def planted(self, batch, stage):
        loss, logs = compute_loss(self, batch, stage)
        if term == "loss":
            return loss * (1 + 1e-4), logs
        change = 1e-4 * logs[term]
        return loss + change, {**logs, term: logs[term] + change}

    monkeypatch.setattr(algorithm, "compute_loss", planted)
    steps, boundaries = trajectory(name, pairs, monkeypatch, PLANTED_STEPS)
    problems = mismatches(steps, golden["steps"], boundaries)
    assert problems, f"a 1e-4 relative change of {name}'s {term} passed the golden comparison"
