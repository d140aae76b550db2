"""Compare every algorithm in one command: TensorBoard runs and the reward–KL frontier.

    python experiments/compare/run.py [--quick] [--methods dpo ipo ...] [--method NAME=CLASS_PATH:RECIPE[:PARAMETER=V1,V2]] [--seeds 0 1] [--steps 120] [--out outputs/compare] [--force]

1. trains one SFT model on the embedded demonstrations (the shipped SFT recipe) -> <out>/sft;
2. samples the preference data from it once per seed (cached, so no run's wall time pays for it);
3. trains every method of ``plan.METHODS`` from that SFT model on the same data and the same
   budget (optimiser steps, each on 16 prompts' worth of data), for each strength value and seed,
   evaluating every ``eval_every`` steps with the shared ``SampledEvaluation`` (eval/reward,
   eval/kl to the SFT start, on identical held-out prompts) -> <out>/tb/<method>/<param>=<v>/seed=<s>;
4. measures Best-of-N of the SFT model, r(N) for N = 1, 2, 4, ..., the reference curve;
5. writes <out>/results.md and <out>/frontier.png.

A finished run is skipped when the command is repeated (``--force`` reruns everything), so an
interrupted comparison resumes. View the runs side by side: ``tensorboard --logdir <out>/tb``.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import gc
import multiprocessing
import os
import shutil
import sys
import time
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, REPO)  # run as a script from anywhere, without installing the package

import yaml  # noqa: E402

from experiments.compare.plan import METHODS, QUICK, Budget, Method, Run, method_from_spec, plan, run_args, sft_args  # noqa: E402
from experiments.compare.figure import plot_frontier  # noqa: E402
from experiments.compare.machine import LoadMonitor, cpu_model  # noqa: E402
from experiments.compare.report import best_of_n_curve, load_json, run_result, save_json  # noqa: E402
from experiments.compare.tables import write_results  # noqa: E402
from lit_align.callbacks.hparams import write_experiment  # noqa: E402


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny budget for a smoke test (one seed, one strength value, a few steps)")
    parser.add_argument("--out", default=None, help="output folder (default outputs/compare, or outputs/compare_quick with --quick)")
    parser.add_argument("--methods", nargs="+", choices=sorted(METHODS), help="subset of methods (default: all)")
    parser.add_argument("--method", action="append", default=[], metavar="NAME=CLASS_PATH:RECIPE[:PARAMETER=V1,V2,...]",
                        help="add a method without editing plan.py: an algorithm class path, a recipe YAML (with its data) and optionally the strength parameter and its sweep (repeatable)")
    parser.add_argument("--seeds", nargs="+", type=int, help=f"seeds (default {' '.join(map(str, Budget.seeds))}; --quick: 0)")
    parser.add_argument("--steps", type=int, help=f"optimiser steps per run (default {Budget.steps})")
    parser.add_argument("--eval-every", type=int, help=f"steps between evaluations (default {Budget.eval_every})")
    parser.add_argument("--sft-model", help="start every method from this model instead of training the SFT start (e.g. data/embedded/sft)")
    parser.add_argument("--jobs", type=int, help="runs trained at once, each in its own process (default: one per CPU core, at most 4; --quick: 1)")
    parser.add_argument("--threads", type=int, help="torch CPU threads per run (default: 1 with --jobs > 1, else torch's choice; 1 is faster on a busy machine)")
    parser.add_argument("--configs", help="configs folder to read the recipes from (default: the repository's configs/; a saved copy reruns rows on the configs of an earlier comparison)")
    parser.add_argument("--report-only", action="store_true", help="train nothing: rebuild results.md and frontier.png from the runs finished so far (the header keeps the training call's command and cost from <out>/call.json)")
    parser.add_argument("--force", action="store_true", help="retrain the SFT start and rerun finished runs")
    return parser.parse_args(argv)


def budget_from(args: argparse.Namespace) -> Budget:
    budget = QUICK if args.quick else Budget()
    try:
        custom = tuple(method_from_spec(spec) for spec in args.method)
    except ValueError as error:
        raise SystemExit(f"lit_align compare: {error}") from None
    # --method alone runs just those; with --methods, both.
    names = tuple(args.methods or ()) + tuple(m.name for m in custom) if (args.methods or custom) else None
    changes = {"custom": custom, "methods": names, "seeds": tuple(args.seeds) if args.seeds else None, "steps": args.steps, "eval_every": args.eval_every,
               "configs": os.path.abspath(args.configs) if args.configs else None}
    return Budget(**{**budget.__dict__, **{k: v for k, v in changes.items() if v is not None}})


def unavailable(method: Method, root: str) -> str | None:
    """Why ``method`` cannot run here (its config or class is missing), or None."""
    paths = [a for a in method.config_args(root) if not a.startswith("--")]
    for path in paths:
        if not os.path.exists(path):
            return f"{path} does not exist"
    with open(paths[-1]) as f:
        class_path = method.class_path or ((yaml.safe_load(f) or {}).get("model") or {}).get("class_path")
    if class_path is None:
        return f"{paths[-1]} names no model class_path"
    module, _, name = class_path.rpartition(".")
    try:
        getattr(__import__(module, fromlist=[name]), name)
    except (ImportError, AttributeError) as error:
        return f"{class_path} cannot be imported ({error})"
    return None


def train_sft(out: str, budget: Budget, force: bool) -> str:
    from lit_align.cli import main as cli

    path = os.path.join(out, "sft")
    if os.path.exists(os.path.join(path, "config.json")) and not force:
        print(f"lit_align compare: reusing the SFT start {path} (--force retrains it)")
        return path
    print("lit_align compare: training the shared SFT start ...")
    cli(sft_args(out, budget))
    return path


def prepare_data(sft: str, budget: Budget) -> None:
    """Sample the embedded preference pairs of every seed now, so no timed run pays for it."""
    from lit_align.data.embedded import embedded_rows

    if all(budget.method(name).data == "embedded_best_of_n.yaml" or budget.method(name).recipe for name in budget.methods):
        return  # BOND, J-BOND and online DPO sample their own completions: no pairs to prepare
    for seed in budget.seeds:
        embedded_rows("embedded:pairs", "train", budget.num_examples, seed, model=sft)
        embedded_rows("embedded:pairs", "validation", budget.num_val_examples, seed, model=sft)


def execute(run: Run, sft: str, tb: str, budget: Budget, force: bool) -> dict:
    from lit_align.cli import main as cli

    log_dir = os.path.join(tb, run.name, run.version)
    done = os.path.join(log_dir, "compare_result.json")
    args = run_args(run, sft, tb, budget)
    # Reuse a finished run only when it ran with exactly these arguments (same budget, start, data).
    if os.path.exists(done) and not force and load_json(done).get("args") == args:
        return {**load_json(done), "reused": True}
    if os.path.isdir(log_dir):
        shutil.rmtree(log_dir)  # events of an earlier attempt would mix into this run's curves
    start, cpu = time.perf_counter(), time.process_time()
    trainer = cli(args).trainer
    result = run_result(run, log_dir, time.perf_counter() - start, trainer.global_step)
    # CPU time (all threads of this process): what the run costs, whatever else the machine runs.
    result["cpu_seconds"] = time.process_time() - cpu
    result["args"] = args
    save_json(done, result)
    return result


def work(run: Run, sft: str, tb: str, budget: Budget, force: bool, threads: int | None) -> dict:
    """One run, in this process or a spawned worker (a fresh interpreter, so torch's threads are its own)."""
    warnings.filterwarnings("ignore", message="LightningCLI's args parameter")
    if threads:
        import torch

        torch.set_num_threads(threads)
    try:
        return execute(run, sft, tb, budget, force)
    finally:
        gc.collect()


def cost_line(what: str, call: dict) -> str:
    """results.md's line on a call's wall and CPU time and load average (``call``: as kept in call.json)."""
    cost, cores, reused = call["cost"], call["cores"], call["reused"]
    return (f"- **{what}:** {clock(cost['wall_seconds'])} wall, {clock(cost['cpu_seconds'])} CPU (all processes); 1-minute load average "
            f"{cost['load_start']:.1f} at the start, mean {cost['load_mean']:.1f}, max {cost['load_max']:.1f} (sampled every 30 s; {cores} cores)."
            + (f" {reused} finished runs were reused, not retrained." if reused else ""))


def train_all(runs: list[Run], sft: str, tb: str, budget: Budget, args: argparse.Namespace, began: float, jobs: int, threads: int | None) -> tuple[list[dict], dict[str, str]]:
    """Train (or reuse, or with --report-only just collect) every run; return results in plan order and failures.

    With ``jobs > 1`` the runs go to a pool of spawned processes, one torch thread each by default:
    the tiny model cannot use two cores in one process, so two runs at once nearly halve the wall time.
    """
    results: dict[int, dict] = {}
    failed: dict[str, str] = {}
    if args.report_only:
        for i, run in enumerate(runs):
            done = os.path.join(tb, run.name, run.version, "compare_result.json")
            if os.path.exists(done):
                results[i] = load_json(done)
            else:
                failed[f"{run.name}/{run.version}"] = "not run yet (--report-only)"
        return [results[i] for i in sorted(results)], failed

    print(f"lit_align compare: training {len(runs)} runs, {jobs} at a time ({threads or 'default'} torch thread(s) each)", flush=True)
    training_began, trained = time.perf_counter(), 0

    def report(i: int, value: dict | None = None, error: BaseException | None = None) -> None:
        nonlocal trained
        run = runs[i]
        label = f"{run.name}/{run.version}"
        finished = len(results) + len(failed) + 1
        counter = f"[{finished}/{len(runs)}]"
        if error is not None:  # one broken method (or config: the CLI exits) must not cost the whole comparison
            failed[label] = f"{type(error).__name__}: {error}"
            print(f"lit_align compare: {counter} {label} FAILED: {failed[label]}", flush=True)
            return
        results[i] = value
        reused = value.get("reused", False)
        trained += not reused
        # ETA from the runs trained in this call (a resumed comparison reuses finished runs instantly).
        per_run = (time.perf_counter() - training_began) / max(1, trained)
        print(f"lit_align compare: {counter} {label}: reward {value['reward']:.3f}, KL {value['kl']:.2f}, {value['wall_seconds']:.0f} s{' (finished earlier)' if reused else ''} | "
              f"elapsed {clock(time.perf_counter() - began)}, ETA {clock(per_run * (len(runs) - finished))}", flush=True)

    if jobs == 1:
        for i, run in enumerate(runs):
            print(f"lit_align compare: [{i + 1}/{len(runs)}] {run.name}/{run.version} ...", flush=True)
            try:
                value = work(run, sft, tb, budget, args.force, threads)
            except (Exception, SystemExit) as error:
                report(i, error=error)
                continue
            report(i, value)
    else:
        with concurrent.futures.ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = {pool.submit(work, run, sft, tb, budget, args.force, threads): i for i, run in enumerate(runs)}
            for future in concurrent.futures.as_completed(futures):
                try:
                    value = future.result()
                except (Exception, SystemExit) as error:
                    report(futures[future], error=error)
                    continue
                report(futures[future], value)
    return [results[i] for i in sorted(results)], failed


def best_of_n_curves(sft: str, seeds: list[int], budget: Budget, path: str, force: bool) -> dict[int, list[dict]]:
    """Best-of-N curve of the SFT start per seed, on that seed's held-out prompts; cached in ``path``
    (reused while the start model, prompts and N list are the same)."""
    from lit_align.data.embedded import embedded_rows

    key = {"model": os.path.abspath(sft), "eval_prompts": budget.eval_prompts, "bon_ns": list(budget.bon_ns)}
    cached = load_json(path) if os.path.exists(path) and not force else {}
    stored = cached.get("curves", {}) if isinstance(cached, dict) and cached.get("key") == key else {}
    curves = {}
    for seed in seeds:
        if str(seed) in stored:
            curves[seed] = stored[str(seed)]
            continue
        prompts = [row["prompt"] for row in embedded_rows("embedded:prompts", "validation", budget.eval_prompts, seed)]
        curves[seed] = best_of_n_curve(sft, prompts, list(budget.bon_ns))
    save_json(path, {"key": key, "curves": {str(k): v for k, v in curves.items()}})
    return curves


def clock(seconds: float) -> str:
    return time.strftime("%H:%M:%S", time.gmtime(seconds))


def main(argv: list[str] | None = None) -> dict:
    args = parse(argv)
    # Runs are LightningCLI calls in-process (no re-import per run); its args= notice is noise here.
    warnings.filterwarnings("ignore", message="LightningCLI's args parameter")
    budget = budget_from(args)
    out = args.out or os.path.join("outputs", "compare_quick" if args.quick else "compare")
    tb = os.path.join(out, "tb")
    os.makedirs(out, exist_ok=True)
    skipped = {name: reason for name in budget.methods if (reason := unavailable(budget.method(name), budget.configs))}
    for name, reason in skipped.items():
        print(f"lit_align compare: SKIPPING {name}: {reason}")
    budget = Budget(**{**budget.__dict__, "methods": tuple(m for m in budget.methods if m not in skipped)})
    runs = plan(budget, args.quick)
    print(f"lit_align compare: {len(runs)} runs ({', '.join(budget.methods)}; seeds {list(budget.seeds)}), {budget.steps} steps each, evaluation every {budget.eval_every} steps")
    began = time.perf_counter()
    with LoadMonitor() as monitor:
        sft = args.sft_model or (os.path.join(out, "sft") if args.report_only else train_sft(out, budget, args.force))
        if not args.report_only:
            prepare_data(sft, budget)
        jobs = args.jobs or (1 if args.quick else max(1, min(4, os.cpu_count() or 1)))
        threads = args.threads or (1 if jobs > 1 else None)
        results, failed = train_all(runs, sft, tb, budget, args, began, jobs, threads)
        # One Best-of-N curve per seed, on that seed's held-out prompts: SampledEvaluation draws its
        # prompts with the DataModule's seed, so each run is scored on its own seed's prompts.
        order = list(METHODS) + [m.name for m in budget.custom]
        results = sorted(results, key=lambda r: (r["seed"], order.index(r["method"]), r["value"] or 0.0))
        curves = best_of_n_curves(sft, sorted(set(budget.seeds)), budget, os.path.join(out, "best_of_n.json"), args.force)
    cost = monitor.summary()
    # The HPARAMS tab's columns: method, strength and seed with every value the runs took, and the final evaluation.
    write_experiment(tb, {column: list(dict.fromkeys(r[key] for r in results)) for column, key in (("method", "method"), ("strength", "label"), ("seed", "seed"))})
    command = f"python experiments/compare/run.py {' '.join(argv if argv is not None else sys.argv[1:])}".rstrip()
    now = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    # What the training call cost, kept beside its runs, so a report rebuilt later (--report-only) still says it.
    call_record = os.path.join(out, "call.json")
    this_call = {"command": command, "generated": now, "machine": cpu_model(), "cores": os.cpu_count(), "jobs": jobs, "threads": threads,
                 "cost": cost, "reused": sum(r.get("reused", False) for r in results)}
    if not args.report_only:
        save_json(call_record, this_call)
    trained_by = load_json(call_record) if args.report_only and os.path.exists(call_record) else None
    machine = trained_by or this_call  # the machine that trained the runs, also in a report rebuilt elsewhere
    header = "\n".join([
        "# Algorithm comparison on the embedded task", "",
        "Generated by the command below from the runs alone; the findings written by hand are in FINDINGS.md.", "",
        (f"- **Command:** `{trained_by['command']}` (runs trained, report generated {trained_by['generated']}); this report rebuilt from "
         f"those runs by `{command}` ({now})." if trained_by else f"- **Command:** `{command}` (generated {now})."),
        f"- **Runs:** {len(results)}: {len(budget.methods)} methods × their strength values × seeds {list(budget.seeds)}, each from the same SFT start with "
        f"{budget.steps} optimiser steps on 16 prompts' worth of data per step; evaluated at the start and every {budget.eval_every} steps on "
        f"{budget.eval_prompts} held-out prompts × {budget.samples_per_prompt} samples, and at the last step on {budget.final_prompts} × {budget.final_samples_per_prompt}, "
        f"with more prompts (up to {budget.final_max_prompts} in all) where those leave SE(KL)/KL ≥ {budget.final_kl_relative_se:.0%}.",
        f"- **Machine:** {machine['machine']}, {machine['cores']} CPU core(s); {machine['jobs']} run(s) at a time, {machine['threads'] or 'default'} torch thread(s) each.",
        (cost_line("Cost of the call that trained the runs", trained_by) if trained_by else
         "- **This call** only rebuilt the report (--report-only); the runs' own wall and CPU times are in the tables." if args.report_only else
         cost_line("Cost of this call", this_call)),
        "- Reward and KL are each run's evaluations; KL(π ‖ SFT) is the sampled estimate of `SampledEvaluation`. CPU time is per process "
        "(all its threads), wall time the whole `fit`.",
    ] + ([f"- Skipped (not runnable here): {', '.join(f'{k} ({v})' for k, v in skipped.items())}."] if skipped else []))
    dataset = 2 * budget.num_examples if any(budget.method(m).data in ("embedded_pairs.yaml", "embedded_unpaired.yaml", "embedded_sft.yaml") for m in budget.methods) else 0
    table = write_results(os.path.join(out, "results.md"), results, curves, failed, header, dataset)
    plotted = plot_frontier(os.path.join(out, "frontier.png"), results, curves, table, f"Reward vs KL on the embedded task ({budget.steps} steps, {len(budget.seeds)} seeds, 95% bands)")
    print(f"lit_align compare: done in {clock(time.perf_counter() - began)}: {os.path.join(out, 'results.md')}" + (f", {os.path.join(out, 'frontier.png')}" if plotted else ""))
    print(f"lit_align compare: view the runs side by side: tensorboard --logdir {tb} (HPARAMS tab: every run with method, strength, seed, final eval/reward and eval/kl)")
    return {"results": results, "failed": failed, "skipped": skipped, "best_of_n": curves, "out": out, "cost": cost}


if __name__ == "__main__":
    main()
