"""BOND / J-BOND modules: shipped configs run, the anchor moves as the paper says, the evaluation's
reference points are right, and J-BOND end to end moves the embedded SFT model toward Best-of-N."""

from __future__ import annotations

import math
import os

import pytest
import torch
from lightning import Trainer

from lit_align.algorithms import BOND, JBOND
from lit_align.algorithms.base import REFERENCE_PREFIX
from lit_align.callbacks import BestOfNEvaluation
from lit_align.data.best_of_n import BestOfNDataModule
from lit_align.utils.scalars import last, read_scalars
from tests.conftest import REPO, run_cli

SMALL_DATA = [
    "--model.init_args.model=embedded:tiny",
    "--data.init_args.num_examples=8",
    "--data.init_args.num_val_examples=4",
    "--data.init_args.batch_size=4",
    "--data.init_args.max_new_tokens=8",
    "--trainer.fast_dev_run=true",
    "--trainer.enable_progress_bar=false",
]


@pytest.mark.parametrize("algorithm", ["bond", "jbond"])
def test_config_fast_dev_run(algorithm, tmp_path):
    cli = run_cli(
        ["fit", "--config", os.path.join(REPO, "configs/base.yaml"), "--config", os.path.join(REPO, "configs/data/embedded_best_of_n.yaml"),
         "--config", os.path.join(REPO, f"configs/algorithm/{algorithm}.yaml"), *SMALL_DATA],
        str(tmp_path),
    )
    assert type(cli.model).__name__.lower() == algorithm
    assert cli.datamodule.num_samples == (2 if algorithm == "jbond" else 4)  # J-BOND: 2 anchor samples
    metrics = cli.trainer.callback_metrics
    assert torch.isfinite(metrics["val/loss"]) and 0.0 <= metrics["val/quantile"] <= 1.0
    evaluation = next(cb for cb in cli.trainer.callbacks if isinstance(cb, BestOfNEvaluation))
    n = evaluation.best_of_n or cli.datamodule.num_samples
    assert evaluation.last["eval/bon_kl_analytic"] == pytest.approx(math.log(n) - (n - 1) / n)


def tiny_setup(algorithm, **kwargs):
    datamodule = BestOfNDataModule(dataset="embedded:prompts", num_examples=8, num_val_examples=4, batch_size=4, num_samples=2, max_new_tokens=6, max_length=32, max_prompt_length=16)
    module = algorithm(model="embedded:micro", optimizer=lambda p: torch.optim.SGD(p, lr=0.5), **kwargs)
    trainer = Trainer(max_steps=1, limit_val_batches=0, logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    return datamodule, module, trainer


def test_jbond_anchor_is_an_ema_of_the_policy():
    datamodule, module, trainer = tiny_setup(JBOND, anchor_ema=0.25)
    anchor_before = [p.detach().clone() for p in module.policy.reference.parameters()]
    trainer.fit(module, datamodule=datamodule)
    policy = list(module.policy.policy.parameters())
    assert any(not torch.equal(p, a) for p, a in zip(policy, anchor_before))  # the step moved the policy
    for a0, a1, p in zip(anchor_before, module.policy.reference.parameters(), policy):
        assert torch.allclose(a1, 0.75 * a0 + 0.25 * p.detach(), atol=1e-6)
    # The moving anchor is training state: it stays in checkpoints (other algorithms drop the reference).
    checkpoint = {"state_dict": module.state_dict()}
    module.on_save_checkpoint(checkpoint)
    assert any(k.startswith(REFERENCE_PREFIX) for k in checkpoint["state_dict"])
    fresh = JBOND(model="embedded:micro")
    fresh.on_load_checkpoint(checkpoint)
    fresh.load_state_dict(checkpoint["state_dict"])
    assert all(torch.equal(a, b) for a, b in zip(fresh.policy.reference.parameters(), module.policy.reference.parameters()))


def test_iterative_bond_copies_the_policy_into_the_anchor_every_k_steps():
    datamodule, module, trainer = tiny_setup(BOND, anchor_update_interval=2)
    anchor_before = [p.detach().clone() for p in module.policy.reference.parameters()]
    trainer.fit(module, datamodule=datamodule)  # one step: not yet a round
    assert all(torch.equal(a, b) for a, b in zip(anchor_before, module.policy.reference.parameters()))
    trainer = Trainer(max_steps=2, limit_val_batches=0, logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(module, datamodule=datamodule)
    assert all(torch.equal(a, p) for a, p in zip(module.policy.reference.parameters(), module.policy.policy.parameters()))
    # Plain BOND keeps the frozen reference out of checkpoints, as every other algorithm does.
    plain = BOND(model="embedded:micro")
    checkpoint = {"state_dict": plain.state_dict()}
    plain.on_save_checkpoint(checkpoint)
    assert not any(k.startswith(REFERENCE_PREFIX) for k in checkpoint["state_dict"])


def test_moving_anchor_refuses_offline_samples(tmp_path):
    path = tmp_path / "bon.jsonl"
    path.write_text('{"prompt": "the film was", "completions": ["great .", "bad ."], "rewards": [1.0, -0.3]}\n' * 4)
    datamodule = BestOfNDataModule(dataset=str(path), val_split="train", num_samples=2, batch_size=2)
    module = JBOND(model="embedded:micro")
    trainer = Trainer(max_steps=1, limit_val_batches=0, logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    with pytest.raises(ValueError, match="mode='online'"):
        trainer.fit(module, datamodule=datamodule)


def test_evaluation_of_the_untrained_policy_is_the_reference():
    datamodule = BestOfNDataModule(dataset="embedded:prompts", num_examples=8, num_val_examples=8, batch_size=4, num_samples=4, max_new_tokens=6)
    evaluation = BestOfNEvaluation(num_prompts=8, samples_per_prompt=2, num_reference_samples=8, max_new_tokens=6)
    trainer = Trainer(logger=False, callbacks=[evaluation], enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False)
    trainer.validate(BOND(model="embedded:micro"), datamodule=datamodule)
    values = evaluation.last
    assert values["eval/kl"] == pytest.approx(0.0, abs=1e-5)  # policy == reference
    assert values["eval/bon_kl_analytic"] == pytest.approx(math.log(4) - 0.75)
    assert values["eval/bon_reward"] >= values["eval/reference_reward"]
    # The quantile of a reference sample among reference samples is 1/2 plus half the tie probability.
    assert 0.3 < values["eval/quantile"] < 0.9


@pytest.mark.slow
def test_jbond_moves_the_sft_model_toward_best_of_n(embedded_sft_model, tmp_path):
    cli = run_cli(
        ["fit", "--config", os.path.join(REPO, "configs/base.yaml"), "--config", os.path.join(REPO, "configs/data/embedded_best_of_n.yaml"),
         "--config", os.path.join(REPO, "configs/algorithm/jbond.yaml"), f"--model.init_args.model={embedded_sft_model}",
         "--data.init_args.num_examples=320", "--data.init_args.num_val_examples=32", "--data.init_args.max_new_tokens=16",
         "--trainer.enable_progress_bar=false"],
        str(tmp_path),
    )
    scalars = read_scalars(cli.trainer.logger.log_dir)
    reward, start, bon = last(scalars, "eval/reward"), last(scalars, "eval/reference_reward"), last(scalars, "eval/bon_reward")
    # Toward Best-of-N: at least a third of the way from the SFT model's reward to Best-of-4's.
    assert reward > start + (bon - start) / 3, (reward, start, bon)
    assert last(scalars, "eval/quantile") > 0.6
    # ...while the KL to the SFT model stays in the range of Best-of-N's own KL.
    assert 0.0 < last(scalars, "eval/kl") < 3 * last(scalars, "eval/bon_kl_analytic")
