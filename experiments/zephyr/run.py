"""Zephyr (arXiv 2310.16944) on the embedded default, one command: dSFT -> AIF -> dDPO (+ ablation, evaluation).

    python experiments/zephyr/run.py [--quick] [--force [STAGE ...]] [--out outputs/zephyr] [--pool TOKEN ...]

Each stage writes under ``<out>/<stage>/`` and ends by writing ``DONE.json``; a finished stage is
skipped on rerun unless it is forced (``--force`` alone forces all) or a stage it reads re-ran.

  dsft         SFT of the base model on teacher demonstrations (embedded:teacher)     -> dsft/model
  sft_mixed    SFT on mixed-quality demonstrations: a weaker AIF pool member          -> sft_mixed/model
  aif          K completions per prompt from the pool, judged, binarised              -> aif/dataset
  ddpo         DPO from dsft/model on aif/dataset                                     -> ddpo/model
  dpo_no_dsft  the same DPO from the untrained base model (the paper's ablation)      -> dpo_no_dsft/model
  evaluate     true reward and sampled KL of every model on held-out prompts          -> evaluate/results.{json,md}

Pool tokens: ``dsft``, ``sft_mixed``, ``base`` (the untrained model) or any model path / hub name;
list one twice for two completions. Default: dsft dsft sft_mixed base (K = 4, as in the paper);
with --quick: dsft dsft base.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, REPO)  # run as a script from anywhere, without installing the package

CONFIGS = os.path.join(HERE, "configs")
BASE_MODEL = "embedded:tiny"
DEFAULT_POOL = ["dsft", "dsft", "sft_mixed", "base"]
QUICK_POOL = ["dsft", "dsft", "base"]  # --quick saves the sft_mixed training run
STAGES = ["dsft", "sft_mixed", "aif", "ddpo", "dpo_no_dsft", "evaluate"]
DEPENDS = {"dsft": [], "sft_mixed": [], "aif": ["dsft", "sft_mixed"], "ddpo": ["dsft", "aif"], "dpo_no_dsft": ["aif"], "evaluate": STAGES[:-1]}

# Full sizes are the configs' own; --quick shrinks every stage for CI (about a minute on 2 cores).
QUICK = {"sft_examples": 256, "sft_epochs": 1, "aif_prompts": 96, "aif_val_prompts": 16, "dpo_epochs": 1, "eval_prompts": 16, "eval_samples": 2}
FULL = {"sft_examples": None, "sft_epochs": None, "aif_prompts": None, "aif_val_prompts": None, "dpo_epochs": None, "eval_prompts": 200, "eval_samples": 4}


def stages_to_run(stages: list[str], finished: set[str], forced: set[str]) -> list[str]:
    """A stage runs when it is unfinished, forced, or reads the output of a stage that runs."""
    run: list[str] = []
    for stage in stages:
        if stage not in finished or stage in forced or set(run) & set(DEPENDS[stage]):
            run.append(stage)
    return run


def stage_dir(out: str, stage: str) -> str:
    return os.path.join(out, stage)


def marker(out: str, stage: str) -> str:
    return os.path.join(stage_dir(out, stage), "DONE.json")


def train(out: str, stage: str, configs: list[str], overrides: list[str], quick: bool) -> dict:
    """One LightningCLI ``fit``; exports the policy to ``<out>/<stage>/model`` for the next stage."""
    from lit_align.cli import main

    root = stage_dir(out, stage)
    args = ["fit", *[a for c in configs for a in ("--config", os.path.join(CONFIGS, c))], *overrides]
    args += [f"--trainer.logger.init_args.save_dir={root}", f"--trainer.default_root_dir={root}", f"--run_name={stage}"]
    if quick:
        # One small validation at the end; the last callback of every config is SampledEvaluation.
        args += ["--trainer.enable_progress_bar=false", "--trainer.val_check_interval=1.0", "--trainer.num_sanity_val_steps=0"]
        args += ["--data.init_args.num_val_examples=32", "--trainer.callbacks.init_args.num_prompts=16"]
    cli = main(args)
    model_dir = os.path.join(root, "model")
    cli.model.export(model_dir, cli.datamodule.tokenizer)
    metrics = {k: float(v) for k, v in cli.trainer.callback_metrics.items() if k.startswith(("val/", "eval/"))}
    return {"model": model_dir, "log_dir": cli.trainer.log_dir, "metrics": metrics}


def sft_overrides(sizes: dict) -> list[str]:
    args = []
    if sizes["sft_examples"]:
        args.append(f"--data.init_args.num_examples={sizes['sft_examples']}")
    if sizes["sft_epochs"]:
        args.append(f"--trainer.max_epochs={sizes['sft_epochs']}")
    return args


def pool_models(pool: list[str], out: str) -> list[str]:
    named = {"dsft": os.path.join(stage_dir(out, "dsft"), "model"), "sft_mixed": os.path.join(stage_dir(out, "sft_mixed"), "model"), "base": BASE_MODEL}
    return [named.get(token, token) for token in pool]


def run_aif_stage(out: str, pool: list[str], sizes: dict, quick: bool) -> dict:
    from lit_align.aif import main as aif_main

    dataset = os.path.join(stage_dir(out, "aif"), "dataset")
    args = ["--config", os.path.join(CONFIGS, "aif.yaml"), "--models", json.dumps(pool_models(pool, out)), "--out", dataset]
    if sizes["aif_prompts"]:
        args += [f"--num_prompts={sizes['aif_prompts']}", f"--num_val_prompts={sizes['aif_val_prompts']}"]
    if quick:
        args.append("--progress=false")
    aif_main(args)
    with open(os.path.join(dataset, "aif_report.json")) as f:
        return {"dataset": dataset, **json.load(f)}


def dpo_overrides(out: str, start: str, sizes: dict) -> list[str]:
    args = [f"--model.init_args.model={start}", f"--data.init_args.dataset={os.path.join(stage_dir(out, 'aif'), 'dataset')}"]
    if sizes["dpo_epochs"]:
        args.append(f"--trainer.max_epochs={sizes['dpo_epochs']}")
    return args


def evaluate(out: str, sizes: dict, pool: list[str]) -> dict:
    """Ground-truth reward of samples and sampled KL(pi || pi_start), KL(pi || pi_dSFT) per model."""
    from lit_align.callbacks import SampledEvaluation
    from lit_align.data.embedded import TEACHER_POSITIVITY
    from lit_align.data.sft import SFTDataModule
    from lit_align.embedded.task import make_completion
    from lit_align.modeling import load_causal_lm
    from lit_align.rewards import LexiconSentimentReward

    # Held-out prompts of the task (validation split), seen by no stage's training data.
    data = SFTDataModule(model=BASE_MODEL, dataset="embedded:demonstrations", num_examples=16, num_val_examples=sizes["eval_prompts"], max_length=48, max_prompt_length=16)
    data.setup()
    evaluation = SampledEvaluation(num_prompts=sizes["eval_prompts"], samples_per_prompt=sizes["eval_samples"], max_new_tokens=24, seed=4321)
    path = {name: os.path.join(stage_dir(out, name), "model") for name in ("dsft", "sft_mixed", "ddpo", "dpo_no_dsft")}
    path = {name: p for name, p in path.items() if os.path.isdir(p)}  # sft_mixed exists only when pooled
    models = {"base": load_causal_lm(BASE_MODEL), **{name: load_causal_lm(p) for name, p in path.items()}}
    start = {"base": None, "dsft": "base", "sft_mixed": "base", "ddpo": "dsft", "dpo_no_dsft": "base"}
    rows = {}
    for name, policy in models.items():
        row = evaluation.measure(policy, data, models[start[name]] if start[name] else None)
        rows[name] = {"reward": row["eval/reward"], "length": row["eval/length"], "kl_to_start": row.get("eval/kl", 0.0)}
    # Same seed, same samples: this call only adds the log-ratio of the ablation to the dSFT model.
    rows["dpo_no_dsft"]["kl_to_dsft"] = evaluation.measure(models["dpo_no_dsft"], data, models["dsft"])["eval/kl"]
    rows["ddpo"]["kl_to_dsft"], rows["dsft"]["kl_to_dsft"] = rows["ddpo"]["kl_to_start"], 0.0
    prompts = [text for text, _ in data.eval_prompts(sizes["eval_prompts"])]
    rng = random.Random(4321)
    teacher = [make_completion(p, rng, TEACHER_POSITIVITY) for p in prompts for _ in range(sizes["eval_samples"])]
    rows["teacher"] = {"reward": LexiconSentimentReward()([p for p in prompts for _ in range(sizes["eval_samples"])], teacher).mean().item()}
    return {"models": rows, "pool": pool_models(pool, out), "eval_prompts": len(prompts), "samples_per_prompt": sizes["eval_samples"]}


def results_table(out: str, results: dict) -> str:
    done = {stage: json.load(open(marker(out, stage))) for stage in ("ddpo", "dpo_no_dsft", "aif")}
    lines = ["| model | true reward | KL to its start | KL to dSFT | length | DPO val accuracy |", "|---|---|---|---|---|---|"]
    starts = {"base": "—", "teacher": "—", "sft_mixed": "base", "dsft": "base", "ddpo": "dSFT", "dpo_no_dsft": "base"}
    for name in (n for n in ("teacher", "base", "sft_mixed", "dsft", "ddpo", "dpo_no_dsft") if n in results["models"]):
        row = results["models"][name]
        accuracy = done[name]["metrics"].get("val/rewards/accuracies") if name in done else None
        fmt = lambda v, d=3: "—" if v is None else f"{v:.{d}f}"  # noqa: E731
        kl = fmt(row.get("kl_to_start")) + (f" ({starts[name]})" if starts[name] != "—" else "")
        lines.append(f"| {name} | {fmt(row['reward'])} | {kl} | {fmt(row.get('kl_to_dsft'))} | {fmt(row.get('length'), 1)} | {fmt(accuracy)} |")
    lines.append("")
    lines.append(f"AIF: {done['aif']['report']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="outputs/zephyr", help="root folder of the stage outputs (default: outputs/zephyr)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes for CI / a smoke run (about a minute on 2 cores)")
    parser.add_argument("--force", nargs="*", choices=STAGES, default=None, metavar="STAGE", help="re-run these stages (all when none is named) even if finished")
    parser.add_argument("--pool", nargs="+", default=None, help=f"AIF pool (default: {' '.join(DEFAULT_POOL)}; --quick: {' '.join(QUICK_POOL)})")
    args = parser.parse_args(argv)
    args.pool = args.pool or (QUICK_POOL if args.quick else DEFAULT_POOL)
    sizes = QUICK if args.quick else FULL
    forced = set(STAGES if args.force == [] else args.force or [])
    stages = [s for s in STAGES if s != "sft_mixed" or "sft_mixed" in args.pool]
    params = {"quick": args.quick, "pool": args.pool, "sizes": sizes}
    to_run = stages_to_run(stages, {s for s in stages if os.path.exists(marker(args.out, s))}, forced)
    summary = {}
    for stage in stages:
        path = marker(args.out, stage)
        if stage not in to_run:
            summary[stage] = json.load(open(path))
            if summary[stage].get("params") != params:
                print(f"zephyr: WARNING: {stage} was finished with other settings {summary[stage].get('params')}; pass --force {stage} to redo it")
            print(f"zephyr: skip {stage} (finished: {path})")
            continue
        print(f"zephyr: run {stage}")
        started = time.time()
        if stage in ("dsft", "sft_mixed"):
            configs = ["dsft.yaml"] + (["sft_mixed.yaml"] if stage == "sft_mixed" else [])
            result = train(args.out, stage, configs, sft_overrides(sizes), args.quick)
        elif stage == "aif":
            result = run_aif_stage(args.out, args.pool, sizes, args.quick)
        elif stage in ("ddpo", "dpo_no_dsft"):
            start = os.path.join(stage_dir(args.out, "dsft"), "model") if stage == "ddpo" else BASE_MODEL
            result = train(args.out, stage, ["ddpo.yaml"], dpo_overrides(args.out, start, sizes), args.quick)
        else:
            result = evaluate(args.out, sizes, args.pool)
        result.update(params=params, seconds=round(time.time() - started, 1))
        os.makedirs(stage_dir(args.out, stage), exist_ok=True)
        with open(path, "w") as f:
            json.dump(result, f, indent=1)
        summary[stage] = result
    table = results_table(args.out, summary["evaluate"])
    with open(os.path.join(stage_dir(args.out, "evaluate"), "results.md"), "w") as f:
        f.write(table + "\n")
    print(table)
    return summary


if __name__ == "__main__":
    main()
