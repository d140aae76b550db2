"""What the comparison runs: every method's configs, its strength parameter and the sweep.

Every run is ``python -m lit_align fit`` with the method's own shipped configs (base + data +
algorithm) plus the same overrides for all: the start model, the step budget, the evaluation
schedule, the callbacks and the run name ``<method>/<parameter>=<value>/seed=<seed>``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))


CONFIGS = os.path.join(REPO, "configs")


def config(*parts: str, root: str = CONFIGS) -> str:
    return os.path.join(root, *parts)


def config_files(recipe: str, data: str, algorithm: str, root: str = CONFIGS) -> list[str]:
    """``--config`` arguments of a method: the one-file recipe ``<root>/<recipe>.yaml`` where it exists,
    else the older three-file form (``base.yaml`` + ``data/<data>`` + ``algorithm/<algorithm>``), so a
    comparison can be rerun on a saved copy of an earlier configs/ folder (``run.py --configs``)."""
    if os.path.exists(config(recipe + ".yaml", root=root)):
        return ["--config", config(recipe + ".yaml", root=root)]
    return ["--config", config("base.yaml", root=root), "--config", config("data", data, root=root), "--config", config("algorithm", algorithm, root=root)]


@dataclass(frozen=True)
class Method:
    """One algorithm of the comparison.

    ``parameter`` is the CLI key of its strength parameter (None: it has none), ``symbol`` the
    name used in run names and tables, ``values`` the default sweep, ``quick`` the --quick value.
    """

    name: str
    algorithm: str
    data: str
    parameter: str | None
    symbol: str
    values: tuple[float, ...]
    quick: float | None
    extra: tuple[str, ...] = ()
    meaning: str = ""

    # A method given on the command line (``--method``): its recipe file and algorithm class path.
    recipe: str | None = None
    class_path: str | None = None

    def config_args(self, root: str = CONFIGS) -> list[str]:
        """The ``--config`` (and ``--model``) arguments: the recipe of a ``--method``, else the shipped configs."""
        if self.recipe is None:
            return config_files(self.name, self.data, self.algorithm, root)
        return ["--config", self.recipe] + ([f"--model.class_path={self.class_path}"] if self.class_path else [])

    def args(self, value: float | None, root: str = CONFIGS) -> list[str]:
        fixed = self.config_args(root)
        strength = [f"--{self.parameter}={value:g}"] if self.parameter is not None else []
        return fixed + list(self.extra) + strength

    def label(self, value: float | None) -> str:
        return "none" if self.parameter is None else f"{self.symbol}={value:g}"


# Preferred-FT (the DPO paper's SFT baseline): SFT on the chosen completions of the same pairs, with
# the preference methods' learning rate and batch of 16 prompts.
PREFERRED_FT = (
    "--data.init_args.dataset=embedded:pairs",
    "--data.init_args.columns={completion: chosen}",
    "--data.init_args.batch_size=16",
    "--model.init_args.optimizer.init_args.lr=0.0002",
    "--model.init_args.warmup_ratio=0.1",
    "--model.init_args.lr_schedule=linear",
)

# The RL recipes' prompts per step, raised to the 16 prompts of every other method's step.
RL_BATCH = ("--data.init_args.batch_size=16",)

# Cuts that fit five seeds of the sweep into 90 minutes on 2 cores (FINDINGS.md, Budget): they were the
# two costliest methods per run. BOND draws 8 fresh anchor samples per prompt for its quantile (its
# config: 16); PPO makes 2 passes over each rollout (its config and TRL: 4).
BOND_BUDGET = ("--model.init_args.quantile_samples=8",)
PPO_BUDGET = RL_BATCH + ("--model.init_args.num_epochs=2",)

METHODS: dict[str, Method] = {
    m.name: m
    for m in [
        Method("sft", "sft.yaml", "embedded_sft.yaml", None, "", (), None, PREFERRED_FT, "SFT on the chosen completions (Preferred-FT)"),
        Method("dpo", "dpo.yaml", "embedded_pairs.yaml", "model.init_args.beta", "beta", (0.03, 0.1, 0.3), 0.1, meaning="KL penalty beta"),
        Method("cdpo", "cdpo.yaml", "embedded_pairs.yaml", "model.init_args.beta", "beta", (0.03, 0.1, 0.3), 0.1, meaning="KL penalty beta (label smoothing 0.1)"),
        Method("ipo", "ipo.yaml", "embedded_pairs.yaml", "model.init_args.tau", "tau", (0.05, 0.1, 0.5), 0.1, meaning="regularisation tau; target margin 1/(2 tau)"),
        Method("kto", "kto.yaml", "embedded_unpaired.yaml", "model.init_args.beta", "beta", (0.03, 0.1, 0.3), 0.1, meaning="KL penalty beta"),
        Method("orpo", "orpo.yaml", "embedded_pairs.yaml", "model.init_args.odds_ratio_weight", "lambda", (0.1, 0.5, 1.0), 0.5, meaning="odds-ratio weight lambda (no reference)"),
        # BOND and J-BOND sample from the anchor and the policy at every step (about 3x a DPO step here).
        Method("bond", "bond.yaml", "embedded_best_of_n.yaml", "data.init_args.num_samples", "N", (2, 4, 8), 2, BOND_BUDGET, meaning="N of the Best-of-N target; KL* = log N - (N-1)/N"),
        Method("jbond", "jbond.yaml", "embedded_best_of_n.yaml", "model.init_args.kl_weight", "gamma", (0.03, 0.1, 0.3), 0.1, meaning="KL weight gamma to the EMA anchor"),
        # Online DPO (OAIF): 2 samples per prompt from the current policy every step, labelled by the gold reward.
        Method("online_dpo", "online_dpo.yaml", "embedded_best_of_n.yaml", "model.init_args.beta", "beta", (0.03, 0.1, 0.3), 0.1, meaning="KL penalty beta (pairs sampled from the current policy)"),
        # Policy-gradient RL from the gold reward (docs/rl.md): k samples per prompt from the current policy every step.
        # GRPO's sweep starts at the paper's beta = 0.04, which ran to KL ~50 in 120 steps here (one probe run, seed 0).
        Method("rloo", "rloo.yaml", "embedded_best_of_n.yaml", "model.init_args.kl_coef", "beta", (0.01, 0.05, 0.2), 0.05, RL_BATCH, "per-token KL penalty beta in the reward (k = 4)"),
        Method("grpo", "grpo.yaml", "embedded_best_of_n.yaml", "model.init_args.kl_coef", "beta", (0.04, 0.2, 1.0), 0.2, RL_BATCH, "weight beta of the k3 KL loss term (G = 4)"),
        Method("ppo", "ppo.yaml", "embedded_best_of_n.yaml", "model.init_args.kl_coef", "beta", (0.01, 0.05, 0.2), 0.05, PPO_BUDGET, "per-token KL penalty beta in the reward (k = 2, critic, 2 epochs)"),
    ]
}


def method_from_spec(spec: str) -> Method:
    """A method given as ``NAME=CLASS_PATH:RECIPE[:PARAMETER=V1,V2,...]`` (``run.py --method``), e.g.
    ``rloo=my_pkg.RLOO:my_rloo.yaml:model.init_args.beta=0.01,0.05``: the recipe (any ``fit`` config
    with its data) with the algorithm class path, swept over the strength values (the middle one
    with --quick). No edit of this file needed."""
    name, sep, rest = spec.partition("=")
    class_path, _, rest = rest.partition(":")
    recipe, _, sweep = rest.partition(":")
    if not (sep and name and class_path and recipe) or name in METHODS or "/" in name:
        raise ValueError(
            f"--method {spec!r}: expected NAME=CLASS_PATH:RECIPE[:PARAMETER=V1,V2,...] with a NAME that is not a built-in method "
            f"({', '.join(METHODS)}) and has no '/', e.g. rloo=my_pkg.RLOO:configs/rloo.yaml:model.init_args.beta=0.01,0.05"
        )
    parameter, values = None, ()
    if sweep:
        parameter, _, listed = sweep.partition("=")
        try:
            values = tuple(float(v) for v in listed.split(","))
        except ValueError:
            raise ValueError(f"--method {spec!r}: the strength values {listed!r} must be numbers separated by commas") from None
    symbol = parameter.rsplit(".", 1)[-1] if parameter else ""
    quick = values[len(values) // 2] if values else None
    return Method(name, os.path.basename(recipe), "", parameter, symbol, values, quick, meaning=f"{class_path} from {recipe}", recipe=os.path.abspath(recipe), class_path=class_path)


@dataclass(frozen=True)
class Budget:
    """What every run gets: the same optimiser steps (each on 16 prompts' worth of data), the same
    evaluation (prompts, samples, seed) every ``eval_every`` steps, and the same SFT start."""

    steps: int = 80
    eval_every: int = 20
    eval_prompts: int = 64
    samples_per_prompt: int = 2
    # The final evaluation's sample (held-out prompts x samples each), then a second draw of more
    # prompts where the first misses SE(KL)/KL < final_kl_relative_se (issue 22's noise target), up to
    # final_max_prompts in all (SampledEvaluation.second_draw_size; results.md reports what each run took).
    final_prompts: int = 256
    final_samples_per_prompt: int = 4
    final_kl_relative_se: float = 0.05
    final_max_prompts: int = 2048
    num_examples: int = 2000
    num_val_examples: int = 200
    val_batches: int = 4
    sft_examples: int = 4000
    sft_epochs: int = 2
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    bon_ns: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64)
    methods: tuple[str, ...] = tuple(METHODS)
    configs: str = CONFIGS
    # Methods given on the command line (``--method``), by name in ``methods`` like the built-in ones.
    custom: tuple[Method, ...] = ()

    def method(self, name: str) -> Method:
        """The built-in or ``--method`` method called ``name``."""
        return next((m for m in self.custom if m.name == name), None) or METHODS[name]


QUICK = Budget(steps=6, eval_every=3, eval_prompts=8, samples_per_prompt=2, final_prompts=12, final_samples_per_prompt=2, final_max_prompts=24, num_examples=128, num_val_examples=32, val_batches=1, sft_examples=256, sft_epochs=1, seeds=(0,), bon_ns=(1, 2, 4))


@dataclass(frozen=True)
class Run:
    method: Method
    value: float | None
    seed: int

    @property
    def name(self) -> str:
        """``<method>/<parameter>=<value>``: the TensorBoard logger's name; the version is ``seed=<seed>``."""
        return f"{self.method.name}/{self.method.label(self.value)}"

    @property
    def version(self) -> str:
        return f"seed={self.seed}"


def plan(budget: Budget, quick: bool) -> list[Run]:
    """Every (method, strength, seed), seed-major: an interrupted comparison has covered every method."""
    runs = []
    for seed in budget.seeds:
        for name in budget.methods:
            method = budget.method(name)
            values = [None] if method.parameter is None else ([method.quick] if quick else list(method.values))
            runs += [Run(method, value, seed) for value in values]
    return runs


def callbacks(sft_model: str, budget: Budget, run: Run) -> str:
    """The same callbacks for every run (replacing each algorithm config's list), as CLI JSON; the
    HPARAMS row names the run's method, strength and seed, so TensorBoard lists the sweep in one table."""
    evaluation = {
        "num_prompts": budget.eval_prompts,
        "samples_per_prompt": budget.samples_per_prompt,
        "final_num_prompts": budget.final_prompts,
        "final_samples_per_prompt": budget.final_samples_per_prompt,
        "final_kl_relative_se": budget.final_kl_relative_se,
        "final_max_prompts": budget.final_max_prompts,
        "kl_reference": sft_model,  # always the SFT start: J-BOND's own anchor moves
        "prompts": "embedded:prompts",  # identical held-out prompts whatever the DataModule
        "evaluate_at_start": True,
    }
    sweep = {"method": run.method.name, "strength": run.method.label(run.value), "seed": run.seed}
    listing = [
        {"class_path": "lightning.pytorch.callbacks.LearningRateMonitor", "init_args": {"logging_interval": "step"}},
        {"class_path": "lit_align.callbacks.SampledEvaluation", "init_args": evaluation},
        {"class_path": "experiments.compare.throughput.TokenThroughput"},
        {"class_path": "lit_align.callbacks.HParamsSummary", "init_args": {"extra": sweep}},
    ]
    return "--trainer.callbacks=" + json.dumps(listing)


def run_args(run: Run, sft_model: str, tb_dir: str, budget: Budget) -> list[str]:
    """The full ``fit`` argument list of one run."""
    return ["fit", *run.method.args(run.value, budget.configs),
        f"--model.init_args.model={sft_model}",
        f"--seed_everything={run.seed}",
        f"--data.init_args.seed={run.seed}",
        f"--data.init_args.num_examples={budget.num_examples}",
        f"--data.init_args.num_val_examples={budget.num_val_examples}",
        f"--trainer.max_steps={budget.steps}",
        "--trainer.max_epochs=-1",
        f"--trainer.val_check_interval={budget.eval_every}",
        "--trainer.check_val_every_n_epoch=null",
        f"--trainer.limit_val_batches={budget.val_batches}",
        "--trainer.num_sanity_val_steps=0",
        "--trainer.enable_checkpointing=false",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        f"--trainer.logger.init_args.save_dir={tb_dir}",
        f"--trainer.logger.init_args.name={run.name}",
        f"--trainer.logger.init_args.version={run.version}",
        f"--trainer.default_root_dir={tb_dir}",
        callbacks(sft_model, budget, run),
    ]


def sft_args(out: str, budget: Budget) -> list[str]:
    """The shared SFT start: the shipped SFT recipe, exported to ``<out>/sft`` (not data/embedded/sft)."""
    export = [{"class_path": "lit_align.callbacks.ExportPretrained", "init_args": {"also_to": os.path.join(out, "sft")}}]
    return ["fit", *config_files("sft", "embedded_sft.yaml", "sft.yaml", budget.configs),
        f"--data.init_args.num_examples={budget.sft_examples}",
        f"--trainer.max_epochs={budget.sft_epochs}",
        "--trainer.enable_checkpointing=false",
        "--trainer.enable_progress_bar=false",
        f"--trainer.logger.init_args.save_dir={out}",
        "--trainer.logger.init_args.name=sft_start",
        "--trainer.logger.init_args.version=run",
        f"--trainer.default_root_dir={out}",
        "--trainer.callbacks=" + json.dumps(export),
    ]
