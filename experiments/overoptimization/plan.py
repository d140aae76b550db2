"""What the study runs: the budget, the proxies, and every optimisation run's ``fit`` arguments.

Every run is ``python -m lit_align fit`` with a shipped recipe (configs/bond.yaml, online_dpo.yaml,
rloo.yaml, grpo.yaml, ppo.yaml, dpo.yaml) from the SFT start, with the proxy as its reward (BOND,
online DPO, RLOO, GRPO, PPO) or the proxy-labelled
pairs as its data (offline DPO), and ``StudyEvaluation`` as its only callback.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
CONFIGS = os.path.join(REPO, "configs")


@dataclass(frozen=True)
class Proxy:
    """A proxy reward model: its backbone, how many gold-labelled pairs it trains on, its learning rate."""

    name: str
    backbone: str  # "sft" = the SFT start's own backbone (InstructGPT's choice); else e.g. embedded:micro
    pairs: int
    lr: float
    epochs: int = 2
    description: str = ""


@dataclass(frozen=True)
class Method:
    """An optimiser against a proxy: recipe, strength parameter, and the values swept."""

    name: str
    recipe: str
    parameter: str
    symbol: str
    values: tuple[float, ...]
    extra: tuple[str, ...] = ()  # further CLI overrides of the recipe


# One strength each (the weakest KL penalty, so the runs travel far): the curve is the run's own
# trajectory, measured every ``eval_every`` steps (Gao et al. also read RL curves off checkpoints).
# Every method optimises every proxy; each (proxy, method) runs once per seed of ``Budget.seeds``.
# Most expensive first (CPU per step, experiments/compare/results.md), so two workers end together.
METHODS = (
    Method("bond", "bond.yaml", "data.init_args.num_samples", "N", (8,)),
    # Policy-gradient RL against the proxy (docs/rl.md), at the weakest KL penalty of experiments/compare's sweep.
    Method("ppo", "ppo.yaml", "model.init_args.kl_coef", "beta", (0.01,)),
    Method("grpo", "grpo.yaml", "model.init_args.kl_coef", "beta", (0.04,)),  # its k3 loss term: the sweep's weakest is the paper's 0.04
    Method("rloo", "rloo.yaml", "model.init_args.kl_coef", "beta", (0.01,)),
    Method("online_dpo", "online_dpo.yaml", "model.init_args.beta", "beta", (0.03,)),
    Method("offline_dpo", "dpo.yaml", "model.init_args.beta", "beta", (0.03,)),
)


@dataclass(frozen=True)
class Budget:
    sft_examples: int = 4000
    sft_epochs: int = 2
    sft_size: str | None = None  # None: the SFT recipe's own model (embedded:tiny)
    proxies: tuple[Proxy, ...] = (
        Proxy("rm_tiny_1000", "sft", 1000, 1e-3, description="SFT backbone (embedded:tiny, 1.9M parameters), 1000 pairs"),
        # The weaker proxy: a 20x smaller backbone from scratch and a tenth of the pairs. (The previous
        # study's embedded:micro on 250 pairs ranked SFT samples as well as rm_tiny_1000 did, Spearman 0.52.)
        Proxy("rm_micro_100", "embedded:micro", 100, 3e-3, epochs=4, description="embedded:micro from scratch (0.1M parameters), 100 pairs, 4 epochs"),
    )
    heldout_pairs: int = 200
    dpo_pairs: int = 1000
    steps: int = 240  # long enough for a turn-down to show (issue 22: at least 240)
    eval_every: int = 40
    eval_prompts: int = 64  # x samples_per_prompt = 256 samples per measurement
    samples_per_prompt: int = 4
    seeds: tuple[int, ...] = (0, 1, 2)  # per optimisation run: its data order, sampling and initial noise
    bon_pool: int = 64
    bon_ns: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64)
    methods: tuple[Method, ...] = METHODS
    batch_size: int = 16
    optimise_against: tuple[str, ...] | None = None  # proxies the RL-like runs optimise (None: all)


QUICK = Budget(
    sft_examples=256, sft_epochs=1, sft_size="embedded:micro",
    proxies=(Proxy("rm_sft_64", "sft", 64, 3e-3, epochs=1, description="SFT backbone, 64 pairs"), Proxy("rm_micro_32", "embedded:micro", 32, 3e-3, epochs=1, description="embedded:micro, 32 pairs")),
    heldout_pairs=32, dpo_pairs=32, steps=2, eval_every=1, eval_prompts=8, samples_per_prompt=2, seeds=(0, 1), bon_pool=8, bon_ns=(1, 2, 4, 8),
    methods=(Method("bond", "bond.yaml", "data.init_args.num_samples", "N", (2,), ("--model.init_args.quantile_samples=2",)),
             Method("offline_dpo", "dpo.yaml", "model.init_args.beta", "beta", (0.1,))),
    batch_size=4, optimise_against=("rm_sft_64",),
)


@dataclass(frozen=True)
class Run:
    proxy: Proxy
    method: Method
    value: float
    seed: int = 0

    @property
    def curve(self) -> str:
        """The (proxy, method, strength) whose seeds are averaged into one curve."""
        return f"{self.proxy.name}/{self.method.name}/{self.method.symbol}={self.value:g}"

    @property
    def name(self) -> str:
        return f"{self.curve}/seed={self.seed}"


def runs(budget: Budget) -> list[Run]:
    """Seed-major, then proxy-major: an interrupted study has whole seeds of every curve."""
    chosen = [p for p in budget.proxies if budget.optimise_against is None or p.name in budget.optimise_against]
    return [Run(p, m, v, seed) for seed in budget.seeds for p in chosen for m in budget.methods for v in m.values]


def common(out: str, name: str) -> list[str]:
    return [
        "--trainer.enable_checkpointing=false", "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
        "--trainer.logger=false", f"--trainer.default_root_dir={os.path.join(out, 'lightning', name)}",
    ]


def sft_args(out: str, budget: Budget) -> list[str]:
    export = [{"class_path": "lit_align.callbacks.ExportPretrained", "init_args": {"also_to": os.path.join(out, "sft")}}]
    size = [f"--model.init_args.model={budget.sft_size}"] if budget.sft_size else []
    return ["fit", "--config", os.path.join(CONFIGS, "sft.yaml"), *size, f"--data.init_args.num_examples={budget.sft_examples}",
            f"--trainer.max_epochs={budget.sft_epochs}", *common(out, "sft"), "--trainer.callbacks=" + json.dumps(export)]


def proxy_args(proxy: Proxy, sft: str, pairs: str, out: str, budget: Budget) -> list[str]:
    """Bradley–Terry reward model (configs/reward_model.yaml) on the gold-labelled pairs, exported to <out>/proxies/<name>."""
    export = [{"class_path": "lit_align.callbacks.ExportPretrained", "init_args": {"also_to": os.path.join(out, "proxies", proxy.name)}}]
    backbone = sft if proxy.backbone == "sft" else proxy.backbone
    return ["fit", "--config", os.path.join(CONFIGS, "reward_model.yaml"), f"--model.init_args.model={backbone}", f"--data.init_args.dataset={pairs}",
            f"--data.init_args.batch_size={budget.batch_size}", f"--model.init_args.optimizer.init_args.lr={proxy.lr}", f"--trainer.max_epochs={proxy.epochs}",
            "--trainer.val_check_interval=1.0", "--seed_everything=0", *common(out, f"proxy_{proxy.name}"), "--trainer.callbacks=" + json.dumps(export)]


def run_args(run: Run, sft: str, proxy_path: str, proxies: dict[str, str], dpo_pairs: str, points: str, out: str, budget: Budget) -> list[str]:
    evaluation = [{"class_path": "experiments.overoptimization.evaluate.StudyEvaluation",
                   "init_args": {"path": points, "sft": sft, "proxies": proxies, "every": budget.eval_every, "num_prompts": budget.eval_prompts, "samples_per_prompt": budget.samples_per_prompt,
                                "seed": 1234 + run.seed}}]  # each seed's own evaluation samples: the interval over seeds covers evaluation noise too
    args = ["fit", "--config", os.path.join(CONFIGS, run.method.recipe), f"--model.init_args.model={sft}", f"--{run.method.parameter}={run.value:g}", *run.method.extra,
            f"--seed_everything={run.seed}", f"--data.init_args.seed={run.seed}", f"--data.init_args.batch_size={budget.batch_size}",
            f"--trainer.max_steps={budget.steps}", "--trainer.max_epochs=-1", "--trainer.limit_val_batches=0", "--trainer.num_sanity_val_steps=0"]
    if run.method.name == "offline_dpo":
        args.append(f"--data.init_args.dataset={dpo_pairs}")
    else:
        reward = {"class_path": "lit_align.rewards.HFClassifierReward", "init_args": {"model": proxy_path, "device": "cpu"}}
        args.append("--model.init_args.reward=" + json.dumps(reward))
    return args + common(out, run.name) + ["--trainer.callbacks=" + json.dumps(evaluation)]
