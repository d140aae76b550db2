"""Reward over-optimisation on a task with a true reward (after Gao, Schulman & Hilton 2022, arXiv 2210.10760).

    python experiments/overoptimization/run.py [--quick] [--out DIR] [--jobs 2] [--force]

1. trains the SFT start (configs/sft.yaml) -> <out>/sft;
2. samples two completions per prompt from it and labels them with the GOLD reward (the embedded
   task's lexicon) -> jsonl files under <out>/data;
3. trains proxy reward models (configs/reward_model.yaml) of two sizes / data amounts on those pairs
   and measures each: held-out pair accuracy, rank correlation with gold;
4. optimises against each proxy: Best-of-N (N up to 64, from one pool of SFT samples), BOND and online
   DPO with the proxy as reward, offline DPO on pairs the proxy labelled; RL-like runs are measured
   (gold, every proxy, KL to the SFT start) at step 0 and every ``eval_every`` steps;
5. fits Gao et al.'s forms, gold = d (alpha - beta d) for Best-of-N and d (alpha - beta log d) for the
   RL-like runs, d = sqrt(KL); writes <out>/results.md and one figure per proxy.

Every finished piece is cached under <out> (default outputs/overoptimization) and skipped when the
command is repeated with the same settings, so an interrupted study resumes; --force redoes all.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import math
import multiprocessing
import os
import platform
import sys
import time
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, REPO)  # run as a script from anywhere

from experiments.compare.machine import LoadMonitor, cpu_model  # noqa: E402
from experiments.overoptimization.plan import QUICK, Budget, Run, proxy_args, run_args, runs, sft_args  # noqa: E402

BEGAN = time.perf_counter()


def say(message: str) -> None:
    print(f"[overoptimization {time.strftime('%H:%M:%S', time.gmtime(time.perf_counter() - BEGAN))}] {message}", flush=True)


def load(path: str):
    with open(path) as f:
        return json.load(f)


def save(path: str, value) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path + ".tmp", "w") as f:
        json.dump(value, f, indent=1)
    os.replace(path + ".tmp", path)


def cached(path: str, key, build, force: bool, what: str):
    """``build()`` once per ``key``: stored in ``path`` as {key, value}; reused while the key matches."""
    if not force and os.path.exists(path):
        stored = load(path)
        if stored.get("key") == key:
            say(f"{what}: finished earlier ({path})")
            return stored["value"]
    start, cpu = time.perf_counter(), time.process_time()
    say(f"{what} ...")
    value = build()
    save(path, {"key": key, "value": value, "seconds": time.perf_counter() - start, "cpu_seconds": time.process_time() - cpu})
    say(f"{what}: done in {time.perf_counter() - start:.0f} s")
    return value


def fit_cli(args: list[str], threads: int | None = None) -> None:
    """``python -m lit_align fit`` in this process (or a pool worker)."""
    warnings.filterwarnings("ignore", message="LightningCLI's args parameter")
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    if threads:
        import torch

        torch.set_num_threads(threads)
    from lit_align.cli import main as cli

    cli(args)


def train_sft(out: str, budget: Budget, force: bool) -> str:
    path = os.path.join(out, "sft")
    cached(os.path.join(out, "done", "sft.json"), sft_args(out, budget), lambda: fit_cli(sft_args(out, budget)), force, "SFT start (configs/sft.yaml)")
    return path


def prepare_pairs(sft: str, out: str, budget: Budget, force: bool) -> dict[str, str]:
    from experiments.overoptimization.data import DPO_SEED, HELDOUT_SEED, PROXY_SEED, labelled, sample_two, write_jsonl

    largest = max(p.pairs for p in budget.proxies)
    files = {}
    # Gold ties (often both samples score 0) cost pairs: sample a margin of extra prompts.
    for kind, seed, wanted in (("proxy", PROXY_SEED, largest), ("heldout", HELDOUT_SEED, budget.heldout_pairs), ("dpo", DPO_SEED, budget.dpo_pairs)):
        prompts = wanted if kind == "dpo" else math.ceil(wanted * 1.6)
        files[kind] = os.path.join(out, "data", f"{kind}_samples.jsonl")
        rows = cached(os.path.join(out, "done", f"{kind}_samples.json"), {"sft": sft, "prompts": prompts, "seed": seed},
                      lambda: sample_two(sft, prompts, seed), force, f"sampling 2 completions for {prompts} prompts ({kind} pairs)")
        write_jsonl(files[kind], rows)
        if kind != "dpo":
            pairs, ties = labelled(rows, [r["gold"] for r in rows])
            if kind == "proxy":
                for proxy in budget.proxies:
                    if len(pairs) < proxy.pairs:
                        say(f"WARNING: only {len(pairs)} gold-labelled pairs for {proxy.name} (wanted {proxy.pairs}); it trains on all of them")
                    files[proxy.name] = os.path.join(out, "data", f"{proxy.name}_train.jsonl")
                    write_jsonl(files[proxy.name], pairs[: proxy.pairs])
            else:
                write_jsonl(os.path.join(out, "data", "heldout_pairs.jsonl"), pairs)
            say(f"{kind} pairs: {len(pairs)} gold-labelled pairs from {len(rows)} prompts ({ties} left out: both samples scored the same gold reward)")
    return files


def train_proxies(sft: str, files: dict[str, str], out: str, budget: Budget, force: bool) -> dict[str, str]:
    paths = {}
    for proxy in budget.proxies:
        args = proxy_args(proxy, sft, files[proxy.name], out, budget)
        cached(os.path.join(out, "done", f"proxy_{proxy.name}.json"), args, lambda: fit_cli(args), force, f"proxy {proxy.name}: {proxy.description}")
        paths[proxy.name] = os.path.join(out, "proxies", proxy.name)
    return paths


def measure_pool(sft: str, proxies: dict[str, str], budget: Budget) -> dict:
    """Gold and proxy scores of ``bon_pool`` SFT samples on each held-out prompt (the Best-of-N pool)."""
    from experiments.overoptimization.evaluate import Evaluator
    from lit_align.modeling import load_causal_lm

    evaluator = Evaluator(sft, proxies, budget.eval_prompts, budget.bon_pool, seed=4321)
    model = load_causal_lm(sft, evaluator.tokenizer).eval()
    prompts, _, _, texts = evaluator.sample(model, budget.bon_pool)
    scores = evaluator.scores(prompts, texts)
    return {name: values.reshape(budget.eval_prompts, budget.bon_pool).tolist() for name, values in scores.items()}


def proxy_quality(proxies: dict[str, str], out: str) -> dict:
    """Each proxy's held-out pair accuracy against the gold labels (pairs no proxy trained on)."""
    from experiments.overoptimization.data import read_jsonl
    from lit_align.rewards import HFClassifierReward

    heldout = read_jsonl(os.path.join(out, "data", "heldout_pairs.jsonl"))
    quality = {}
    for name, path in proxies.items():
        reward = HFClassifierReward(path, device="cpu")
        prompts = [r["prompt"] for r in heldout]
        chosen, rejected = reward(prompts, [r["chosen"] for r in heldout]), reward(prompts, [r["rejected"] for r in heldout])
        quality[name] = {"heldout_pairs": len(heldout), "accuracy": float((chosen > rejected).float().mean()), "ties": int((chosen == rejected).sum())}
    return quality


def label_dpo_pairs(proxies: dict[str, str], out: str) -> dict[str, dict]:
    """The offline-DPO pairs of each proxy: the dpo samples, chosen = the proxy's pick."""
    from experiments.overoptimization.data import labelled, read_jsonl, write_jsonl
    from lit_align.rewards import HFClassifierReward

    rows = read_jsonl(os.path.join(out, "data", "dpo_samples.jsonl"))
    info = {}
    for name, path in proxies.items():
        reward = HFClassifierReward(path, device="cpu")
        a = reward([r["prompt"] for r in rows], [r["completions"][0] for r in rows]).tolist()
        b = reward([r["prompt"] for r in rows], [r["completions"][1] for r in rows]).tolist()
        pairs, ties = labelled(rows, list(zip(a, b)))
        write_jsonl(os.path.join(out, "data", f"{name}_dpo.jsonl"), pairs)
        decided = [p for p in pairs if p["gold_chosen"] != p["gold_rejected"]]
        agree = sum(p["gold_chosen"] > p["gold_rejected"] for p in decided)
        info[name] = {"pairs": len(pairs), "dropped": ties, "gold_decided": len(decided), "gold_agreement": agree / max(1, len(decided))}
    return info


def execute(run: Run, args: list[str], points: str, threads: int | None) -> dict:
    start, cpu = time.perf_counter(), time.process_time()
    fit_cli(args, threads)
    return {"points": load(points), "wall_seconds": time.perf_counter() - start, "cpu_seconds": time.process_time() - cpu}


def optimise(sft: str, proxies: dict[str, str], out: str, budget: Budget, jobs: int, force: bool, meanwhile=None) -> tuple[dict[str, dict], object]:
    """Train (or reuse) every run; ``meanwhile()`` runs in this process while the workers train (jobs > 1)
    or before them (jobs = 1). Returns the results and what ``meanwhile`` returned."""
    todo, results = [], {}
    for run in runs(budget):
        folder = os.path.join(out, "runs", run.name)
        points = os.path.join(folder, "points.json")
        args = run_args(run, sft, proxies[run.proxy.name], proxies, os.path.join(out, "data", f"{run.proxy.name}_dpo.jsonl"), points, out, budget)
        done = os.path.join(folder, "result.json")
        if not force and os.path.exists(done) and load(done).get("args") == args:
            results[run.name] = {**load(done), "reused": True}
        else:
            todo.append((run, args, points, done))
    say(f"optimisation runs: {len(results)} finished earlier, {len(todo)} to train ({jobs} at a time, {budget.steps} steps each, measured every {budget.eval_every})")
    threads = 1 if jobs > 1 else None
    start = time.perf_counter()

    def finished(i: int, run: Run, args: list[str], done: str, value: dict) -> None:
        results[run.name] = {**value, "args": args}
        save(done, results[run.name])
        results[run.name]["reused"] = False
        last = value["points"][-1]
        per_run = (time.perf_counter() - start) / i
        say(f"[{i}/{len(todo)}] {run.name}: gold {last['gold']:.3f}, proxy {last['proxy/' + run.proxy.name]:.3f}, KL {last['kl']:.2f} "
            f"({value['wall_seconds']:.0f} s wall, {value['cpu_seconds']:.0f} s CPU) | ETA {per_run * (len(todo) - i):.0f} s")

    side = None
    if jobs == 1 or not todo:
        side = meanwhile() if meanwhile else None
        for i, (run, args, points, done) in enumerate(todo, 1):
            say(f"[{i}/{len(todo)}] {run.name} ...")
            finished(i, run, args, done, execute(run, args, points, threads))
    else:
        import torch

        torch.set_num_threads(1)  # ``meanwhile`` shares the cores with the workers: one thread, not oversubscription
        with concurrent.futures.ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = {pool.submit(execute, run, args, points, threads): (run, args, done) for run, args, points, done in todo}
            side = meanwhile() if meanwhile else None
            for i, future in enumerate(concurrent.futures.as_completed(futures), 1):
                run, args, done = futures[future]
                finished(i, run, args, done, future.result())
    return results, side


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny budget for CI (micro models, a few steps, N up to 8)")
    parser.add_argument("--out", help="output folder (default outputs/overoptimization, or outputs/overoptimization_quick with --quick)")
    parser.add_argument("--jobs", type=int, help="optimisation runs trained at once, each in its own process (default 2; --quick 1)")
    parser.add_argument("--results", help="where to write results.md and the figures (default: <out>)")
    parser.add_argument("--sft-model", help="start from this SFT export instead of training one (e.g. outputs/compare/sft, trained by the same recipe and budget)")
    parser.add_argument("--force", action="store_true", help="redo every piece")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore", message="LightningCLI's args parameter")
    budget = QUICK if args.quick else Budget()
    out = os.path.abspath(args.out or os.path.join("outputs", "overoptimization_quick" if args.quick else "overoptimization"))
    jobs = args.jobs or (1 if args.quick else 2)
    with LoadMonitor() as monitor:
        say(f"output {out}; {len(budget.proxies)} proxies, {len(runs(budget))} optimisation runs; 1-minute load average {monitor.samples[0]:.1f} on {os.cpu_count()} core(s)")

        from lit_align.modeling import is_embedded

        sft = (args.sft_model if is_embedded(args.sft_model) else os.path.abspath(args.sft_model)) if args.sft_model else train_sft(out, budget, args.force)
        files = prepare_pairs(sft, out, budget, args.force)
        proxies = train_proxies(sft, files, out, budget, args.force)
        key = {"sft": sft, "proxies": {n: load(os.path.join(out, "done", f"proxy_{n}.json"))["seconds"] for n in proxies}}
        quality = cached(os.path.join(out, "done", "proxy_quality.json"), key, lambda: proxy_quality(proxies, out), args.force, "proxy held-out accuracy")
        dpo_info = cached(os.path.join(out, "done", "dpo_pairs.json"), key, lambda: label_dpo_pairs(proxies, out), args.force, "labelling the offline-DPO pairs with each proxy")
        # The Best-of-N pool needs no run: it is sampled here while the workers train.
        results, pool = optimise(sft, proxies, out, budget, jobs, args.force, meanwhile=lambda: cached(
            os.path.join(out, "done", "bon_pool.json"), {**key, "pool": budget.bon_pool, "prompts": budget.eval_prompts}, lambda: measure_pool(sft, proxies, budget), args.force,
            f"Best-of-N pool: {budget.bon_pool} SFT samples on each of {budget.eval_prompts} held-out prompts"))

    from experiments.overoptimization.report import write_report

    call = monitor.summary()
    command = ("python experiments/overoptimization/run.py " + " ".join(argv if argv is not None else sys.argv[1:])).strip()
    trained = sum(not r["reused"] for r in results.values())
    timing = os.path.join(out, "study_call.json")
    if trained or not os.path.exists(timing):
        # The call that trained the runs: a later call that only rebuilds the report still cites it.
        save(timing, {**call, "command": command, "trained_runs": trained, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                      "cpu": cpu_model(), "cores": os.cpu_count(), "runs_cpu_seconds": sum(r["cpu_seconds"] for r in results.values() if not r["reused"])})
    first = load(timing)
    machine = (f"{first['cpu']} ({platform.machine()}), {first['cores']} CPU core(s), {first['date']}. The call that trained {first['trained_runs']} of the "
               f"{len(results)} runs (`{first['command']}`) took {first['wall_seconds'] / 60:.1f} min wall and {first['cpu_seconds'] / 60:.1f} min CPU "
               f"(this process and its workers; the runs alone {first['runs_cpu_seconds'] / 60:.1f} min); 1-minute load average {first['load_start']:.1f} at its start, "
               f"mean {first['load_mean']:.1f}, max {first['load_max']:.1f}" + (f". {first['note']}" if first.get("note") else ""))
    report = write_report(args.results or out, budget, quality, pool, dpo_info, results, command, machine, cache=out)
    say(f"done in {call['wall_seconds'] / 60:.1f} min: {report['results_md']}" + "".join(f", {f}" for f in report["figures"]))
    return {**report, "out": out, "quality": quality, "pool": pool, "results": results}


if __name__ == "__main__":
    main()
