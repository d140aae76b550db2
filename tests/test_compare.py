"""The algorithm comparison (experiments/compare): plan, aggregation, and a --quick end-to-end smoke run."""

from __future__ import annotations

import json
import os

import pytest

from experiments.compare.plan import METHODS, QUICK, Budget, plan, run_args
from lit_align.utils.scalars import read_scalars


def test_every_run_gets_the_same_budget_start_and_evaluation():
    budget = Budget()
    runs = plan(budget, quick=False)
    assert len(runs) == len(budget.seeds) * sum(max(1, len(m.values)) for m in METHODS.values())
    names = [f"{r.name}/{r.version}" for r in runs]
    assert len(set(names)) == len(names)
    assert "dpo/beta=0.1/seed=0" in names and "bond/N=4/seed=1" in names and "sft/none/seed=0" in names and "online_dpo/beta=0.03/seed=1" in names
    # Seed-major: an interrupted comparison has already covered every method once.
    assert {r.method.name for r in runs[: len(runs) // len(budget.seeds)]} == set(METHODS)
    shared = None
    for run in runs:
        args = run_args(run, "start", "tb", budget)
        common = {a for a in args if a.startswith(("--model.init_args.model=", "--trainer.max_steps=", "--trainer.val_check_interval="))}
        assert len(common) == 3, args
        (listing,) = [json.loads(a.split("=", 1)[1]) for a in args if a.startswith("--trainer.callbacks=")]
        # The HPARAMS row names this run; every other callback is the same for all.
        (summary,) = [c for c in listing if c["class_path"].endswith("HParamsSummary")]
        assert summary["init_args"]["extra"] == {"method": run.method.name, "strength": run.method.label(run.value), "seed": run.seed}
        common.add(json.dumps([c for c in listing if c is not summary]))
        shared = shared or common
        assert common == shared  # identical start model, step budget, evaluation schedule and callbacks
        if run.method.parameter:
            assert f"--{run.method.parameter}={run.value:g}" in args


@pytest.mark.slow
def test_quick_comparison_end_to_end(embedded_sft_model, tmp_path):
    from experiments.compare.run import main

    # One method per DataModule kind: sequences (SFT), pairs (DPO), unpaired (KTO), best-of-N (BOND); online DPO samples its own pairs.
    methods = ["sft", "dpo", "kto", "bond", "online_dpo"]
    out = str(tmp_path / "compare")
    summary = main(["--quick", "--methods", *methods, "--out", out, "--sft-model", embedded_sft_model])
    assert not summary["failed"] and not summary["skipped"]
    results = summary["results"]
    assert sorted(r["method"] for r in results) == sorted(methods)

    table = open(os.path.join(out, "results.md")).read()
    starts = set()
    for r in results:
        assert f"`{r['run']}`" in table
        log_dir = os.path.join(out, "tb", r["run"])
        assert os.path.isdir(log_dir), log_dir
        scalars = read_scalars(log_dir)
        # Same tags for every algorithm: at step 0 (the SFT start) and after each evaluation.
        for tag in ("eval/reward", "eval/kl", "eval/length"):
            assert scalars[tag][0][0] == 0 and len(scalars[tag]) == 1 + QUICK.steps // QUICK.eval_every, (r["run"], tag, scalars[tag])
        assert abs(scalars["eval/kl"][0][1]) < 1e-4  # the policy IS the reference before the first step
        assert abs(r["kl"]) > 1e-4  # ...and is not after training: the evaluation scores the trained policy
        assert scalars["throughput/tokens_per_sec"][-1][1] > 0
        assert r["steps"] == QUICK.steps
        starts.add(round(r["start_reward"], 6))
    # Identical held-out prompts and sampling seed whatever the DataModule: one shared starting point.
    assert len(starts) == 1
    # The HPARAMS tab's columns: one experiment summary at the logdir's root with every method run.
    from tests.test_tensorboard_view import hparams_content
    from tensorboard.plugins.hparams import plugin_data_pb2

    experiment = plugin_data_pb2.HParamsPluginData.FromString(hparams_content(os.path.join(out, "tb"))["_hparams_/experiment"]).experiment
    methods_listed = next(info for info in experiment.hparam_infos if info.name == "method").domain_discrete.values
    assert sorted(v.string_value for v in methods_listed) == sorted(methods)

    # One Best-of-N curve per seed, on that seed's held-out prompts (each run is scored against its own seed's).
    curves = summary["best_of_n"]
    assert sorted(int(seed) for seed in curves) == sorted({r["seed"] for r in results})
    for bon in curves.values():
        assert [b["n"] for b in bon] == list(QUICK.bon_ns) and bon[0]["kl"] == 0.0 and abs(bon[0]["kl_ties"]) < 1e-9
        rewards = [b["reward"] for b in bon]
        assert all(b >= a - 1e-6 for a, b in zip(rewards, rewards[1:])) and rewards[-1] > rewards[0]  # E[max of N] grows with N
        assert all(0 <= b["kl_ties"] <= b["kl"] + 1e-6 for b in bon)  # ties only lower Best-of-N's KL below log N - (N-1)/N
    for section in ("## Reward at matched KL", "## Which frontier dominates which", "## Cost per run", "## Evaluation noise at the final point", "- **Cost of this call:**"):
        assert section in table, section
    assert summary["cost"]["cpu_seconds"] > 0 and summary["cost"]["load_max"] >= 0
    for r in results:  # the final evaluation's standard error; online methods count what they sampled
        assert r["kl_se"] > 0
        # 12 prompts leave SE(KL)/KL far above 5% after 6 steps: a second draw, capped at 24 prompts in all.
        # (A run at KL <= 0 has no relative error to meet and keeps its first draw.)
        assert r["eval_prompts"] == QUICK.final_max_prompts or (QUICK.final_prompts <= r["eval_prompts"] and (r["kl_se"] < 0.05 * r["kl"] or r["kl"] <= 0)), r
        assert (r["samples_drawn"] > 0) == (r["method"] in ("bond", "online_dpo")), r
    # A report rebuilt from the same runs still says what the call that trained them cost.
    trained = open(os.path.join(out, "results.md")).read().split("- **Cost of this call:** ")[1].split(" (sampled")[0]
    machine = next(line for line in table.splitlines() if line.startswith("- **Machine:**"))
    main(["--quick", "--methods", *methods, "--out", out, "--sft-model", embedded_sft_model, "--report-only", "--jobs", "3"])
    rebuilt = open(os.path.join(out, "results.md")).read()
    assert f"- **Cost of the call that trained the runs:** {trained}" in rebuilt and "this report rebuilt from those runs by" in rebuilt
    assert machine in rebuilt.splitlines()  # the training call's machine and jobs, not the rebuild's --jobs 3
    png = os.path.join(out, "frontier.png")
    pytest.importorskip("matplotlib")
    assert os.path.getsize(png) > 10_000


def test_a_method_joins_by_class_path_and_recipe_without_editing_plan(tmp_path):
    from experiments.compare.plan import method_from_spec
    from experiments.compare.run import budget_from, parse, unavailable

    recipe = tmp_path / "mine.yaml"
    recipe.write_text("model:\n  class_path: lit_align.algorithms.DPO\n  init_args: {beta: 0.1}\ndata: {class_path: lit_align.data.pairwise.PairwiseDataModule}\n")
    args = parse(["--quick", "--methods", "dpo", "--method", f"mine=lit_align.algorithms.IPO:{recipe}:model.init_args.tau=0.05,0.1,0.5"])
    budget = budget_from(args)
    assert budget.methods == ("dpo", "mine")
    runs = plan(budget, quick=True)
    assert [r.name for r in runs] == ["dpo/beta=0.1", "mine/tau=0.1"]  # --quick: the middle value
    assert len(plan(budget_from(parse(["--method", f"mine=lit_align.algorithms.IPO:{recipe}:model.init_args.tau=0.05,0.1,0.5"])), quick=False)) == 3 * len(Budget().seeds)
    mine = run_args(runs[1], "start", "tb", budget)
    assert mine[1:5] == ["--config", str(recipe), "--model.class_path=lit_align.algorithms.IPO", "--model.init_args.tau=0.1"]
    assert "--model.init_args.model=start" in mine and "--trainer.logger.init_args.name=mine/tau=0.1" in mine
    assert unavailable(budget.method("mine"), budget.configs) is None
    # A wrong class path or recipe is named before anything trains; a bad spec is refused with the expected form.
    assert "cannot be imported" in unavailable(method_from_spec(f"x=lit_align.algorithms.Nope:{recipe}"), budget.configs)
    assert "does not exist" in unavailable(method_from_spec(f"x=lit_align.algorithms.IPO:{tmp_path / 'missing.yaml'}"), budget.configs)
    for spec in ("mine", "dpo=lit_align.algorithms.DPO:x.yaml", f"a/b=c.D:{recipe}", f"m=c.D:{recipe}:p=1,two"):
        with pytest.raises(SystemExit, match="lit_align compare: --method"):
            budget_from(parse(["--method", spec]))
