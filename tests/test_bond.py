"""BOND / J-BOND modules: shipped configs run, the anchor moves as the paper says, the evaluation's
reference points are right, and J-BOND end to end moves the embedded SFT model toward Best-of-N."""

from __future__ import annotations

import math
import os
from types import SimpleNamespace

import pytest
import torch
from lightning import Trainer

from lit_align.algorithms import BOND, JBOND
from lit_align.callbacks import BestOfNEvaluation
from lit_align.data.batches import BestOfNBatch
from lit_align.data.best_of_n import BestOfNDataModule
from lit_align.errors import ConfigError
from lit_align.online.generation import SamplingSettings
from lit_align.utils.scalars import last, read_scalars
from tests.conftest import REPO, run_cli

REFERENCE_PREFIX = "policy.reference."  # the anchor's keys in a checkpoint's state dict

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
        ["fit", "--config", os.path.join(REPO, f"configs/{algorithm}.yaml"), *SMALL_DATA],
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
    # With ties (and only 8 reference samples) Best-of-4's KL is below the continuous-reward value.
    assert 0.0 < values["eval/bon_kl_ties"] < values["eval/bon_kl_analytic"]
    assert values["eval/bon_reward"] >= values["eval/reference_reward"]
    # The quantile of a reference sample among reference samples is 1/2 plus half the tie probability.
    assert 0.3 < values["eval/quantile"] < 0.9


@pytest.mark.slow
def test_jbond_moves_the_sft_model_toward_best_of_n(embedded_sft_model, tmp_path):
    cli = run_cli(
        ["fit", "--config", os.path.join(REPO, "configs/jbond.yaml"), f"--model.init_args.model={embedded_sft_model}",
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


# ----- compute_loss wiring, with a stubbed sampler ------------------------------------------------


class StubSampler:
    """Stands in for ``OnlineSampling.sample``: fixed token ids by (who samples, how many), every call
    recorded; the rewards of those ids come from ``REWARD_OF``."""

    def __init__(self, module):
        self.module, self.calls = module, []

    def sample(self, model, prompt_ids, num_samples, seed=None):
        who = "anchor" if model is self.module.policy.reference else "policy" if model is self.module.policy.policy else "?"
        self.calls.append((who, num_samples, seed))
        return [[list(STUB_SAMPLES[(who, num_samples)][b][i]) for i in range(num_samples)] for b in range(len(prompt_ids))]


# Token ids -> reward. One prompt; N = 3 anchor samples, k = 2 policy samples, m = 4 quantile samples
# (all different sizes, so a mixed-up N, k or m changes the numbers).
REWARD_OF = {(1,): 0.0, (2,): 1.0, (3,): 2.0, (4,): 1.0, (5,): -1.0, (6,): 3.0}
STUB_SAMPLES = {
    ("anchor", 3): [[(3,), (1,), (2,)]],  # N anchor samples: rewards 2, 0, 1
    ("anchor", 2): [[(3,), (1,)]],  # J-BOND's 2 anchor samples: rewards 2, 0
    ("policy", 2): [[(4,), (5,)]],  # policy samples: rewards 1, -1
    ("anchor", 4): [[(1,), (2,), (2,), (6,)]],  # quantile samples: rewards 0, 1, 1, 3
}


def stub_scores(tokenizer, reward, prompt_texts, completion_ids):
    return torch.tensor([[REWARD_OF[tuple(c)] for c in per_prompt] for per_prompt in completion_ids], dtype=torch.float32)


LOGPS = (torch.tensor([-1.5]), torch.tensor([[-2.0, -3.0]]), torch.tensor([[-2.5, -2.25]]))  # best, policy samples, anchor of samples


def wire(module, monkeypatch, loss_name, num_samples=3):
    import lit_align.algorithms.bond as bond_module
    import lit_align.online.sampling as sampling_module

    data = StubSampler(module)
    module.connect(SimpleNamespace(sampling_settings=lambda: SamplingSettings(num_samples=num_samples, max_new_tokens=6)))
    monkeypatch.setattr(module, "sample", data.sample)
    monkeypatch.setattr(sampling_module, "score_completions", stub_scores)
    seen = {}

    def sequence_logps(batch, rollout):
        seen["best"], seen["samples"] = batch.best_completions(), rollout.completions_by_prompt()
        return LOGPS

    monkeypatch.setattr(module, "sequence_logps", sequence_logps)
    real = getattr(bond_module, loss_name)

    def spy(*args):
        seen["loss_args"] = args
        return real(*args)

    monkeypatch.setattr(bond_module, loss_name, spy)
    return data, seen


def test_bond_compute_loss_passes_the_right_quantities(monkeypatch):
    module = BOND(model="embedded:micro", quantile_samples=4, num_policy_samples=2, beta=0.3)
    data, seen = wire(module, monkeypatch, "bond_loss")
    batch = BestOfNBatch([[7, 8]], ["the film was"])
    loss, logs = module.compute_loss(batch, "train")
    # Who was sampled: N = 3 anchor samples, k = 2 policy samples, m = 4 fresh anchor samples for the quantile, each its own seed.
    assert sorted(c[:2] for c in data.calls) == [("anchor", 3), ("anchor", 4), ("policy", 2)]
    assert len({c[2] for c in data.calls}) == 3
    assert seen["best"] == [[3]] and seen["samples"] == [[[4], [5]]]  # Best-of-3 is reward 2; the policy samples
    best, samples, anchor, log_ratios, beta = seen["loss_args"]
    assert best is LOGPS[0] and samples is LOGPS[1] and anchor is LOGPS[2] and beta == 0.3
    # Quantiles against the m = 4 quantile samples [0, 1, 1, 3], Laplace prior: (count + 1) / (m + 2).
    # Policy reward 1: p_le = 4/6, p_lt = 2/6, N = 3: log(p_le^2 + p_le p_lt + p_lt^2) = log(28/36).
    # Policy reward -1: p_le = p_lt = 1/6: log(3 / 36).
    assert log_ratios[0].tolist() == pytest.approx([math.log(28 / 36), math.log(3 / 36)])
    expected = 0.7 * 1.5 + 0.3 * ((-2.0 + 2.5 - math.log(28 / 36)) + (-3.0 + 2.25 - math.log(3 / 36))) / 2
    assert loss.item() == pytest.approx(expected)
    assert logs["quantile"].item() == pytest.approx((3 / 4 + 0 / 4) / 2)  # plain MC against the quantile samples


def test_bond_without_quantile_samples_reuses_the_n_anchor_samples(monkeypatch):
    module = BOND(model="embedded:micro", quantile_samples=None, num_policy_samples=2)
    data, seen = wire(module, monkeypatch, "bond_loss")
    module.compute_loss(BestOfNBatch([[7, 8]], ["the film was"]), "train")
    assert sorted(c[:2] for c in data.calls) == [("anchor", 3), ("policy", 2)]
    # Against the N = 3 anchor rewards [2, 0, 1]: reward 1 -> p_le = 3/5, p_lt = 2/5; reward -1 -> 1/5, 1/5.
    log_ratios = seen["loss_args"][3]
    assert log_ratios[0].tolist() == pytest.approx([math.log((9 + 6 + 4) / 25), math.log(3 / 25)])


def test_jbond_compute_loss_passes_the_right_quantities(monkeypatch):
    module = JBOND(model="embedded:micro", num_policy_samples=2, beta=0.4, kl_weight=0.2)
    data, seen = wire(module, monkeypatch, "jbond_loss", num_samples=2)
    loss, _ = module.compute_loss(BestOfNBatch([[7, 8]], ["the film was"]), "train")
    best, samples, anchor, crude, beta, gamma, backward_kl = seen["loss_args"]
    assert best is LOGPS[0] and samples is LOGPS[1] and anchor is LOGPS[2] and (beta, gamma, backward_kl) == (0.4, 0.2, True)
    assert seen["best"] == [[3]]
    # Anchor rewards [2, 0]: policy reward 1 ties nothing below the minimum 0 -> 0; reward -1 < 0 -> -log 16.
    assert crude[0].tolist() == pytest.approx([0.0, -math.log(16)])
    rho = torch.tensor([-2.0 + 2.5, -3.0 + 2.25])
    returns = torch.tensor([0.0, -math.log(16)]) - rho
    expected = 0.6 * 1.5 + 0.4 * (-returns).mean() + 0.2 * rho.mean()
    assert loss.item() == pytest.approx(expected.item())


def test_jbond_refuses_other_than_two_anchor_samples():
    module = JBOND(model="embedded:micro", num_policy_samples=2)
    with pytest.raises(ConfigError, match="num_samples is 3.*exactly 2 anchor samples"):  # at connect, before any sampling
        module.connect(BestOfNDataModule(num_samples=3))


@pytest.mark.parametrize(
    "cls,name,value",
    [(BOND, "beta", 1.5), (BOND, "num_policy_samples", 0), (BOND, "quantile_samples", 0), (BOND, "quantile_prior", -1.0), (BOND, "anchor_update_interval", 0),
     (JBOND, "kl_weight", -0.1), (JBOND, "anchor_ema", 0.0), (JBOND, "anchor_ema", 1.5), (JBOND, "worst_penalty", -1.0), (JBOND, "beta", -0.1)],
)
def test_bad_arguments_raise_a_config_error_naming_them(cls, name, value):
    with pytest.raises(ConfigError, match=rf"{cls.__name__}: {name} must be"):
        cls(model="embedded:micro", **{name: value})


def test_best_of_n_datamodule_needs_two_samples():
    with pytest.raises(ConfigError, match=r"BestOfNDataModule: num_samples must be an integer in \[2"):
        BestOfNDataModule(num_samples=1)
    with pytest.raises(ConfigError, match="BestOfNDataModule: temperature"):
        BestOfNDataModule(temperature=0.0)
    with pytest.raises(ConfigError, match="BestOfNDataModule: max_new_tokens"):
        BestOfNDataModule(max_new_tokens=0)


@pytest.mark.slow
def test_bond_moves_the_sft_model_toward_best_of_n(embedded_sft_model):
    """Plain BOND (N = 4, fixed anchor, quantile from 16 anchor samples) end to end from the SFT model."""
    torch.manual_seed(0)
    datamodule = BestOfNDataModule(dataset="embedded:prompts", model=embedded_sft_model, num_examples=256, num_val_examples=16, batch_size=16,
                                   num_samples=4, max_new_tokens=16, max_length=48, max_prompt_length=16)
    # 8 quantile samples instead of 16 keep the test cheap (generation dominates a step).
    module = BOND(model=embedded_sft_model, beta=0.5, quantile_samples=8, warmup_ratio=0.05, lr_schedule="constant",
                  optimizer=lambda p: torch.optim.AdamW(p, lr=6e-4, weight_decay=0.0))
    evaluation = BestOfNEvaluation(num_prompts=32, samples_per_prompt=2, num_reference_samples=16, max_new_tokens=16)
    trainer = Trainer(max_epochs=1, limit_val_batches=1, num_sanity_val_steps=0, logger=False, callbacks=[evaluation], enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(module, datamodule=datamodule)
    values = evaluation.last
    start, bon, reward = values["eval/reference_reward"], values["eval/bon_reward"], values["eval/reward"]
    # Toward Best-of-4: at least a third of the way from the SFT model's reward...
    assert reward > start + (bon - start) / 3, (reward, start, bon)
    assert values["eval/quantile"] > 0.55, values
    # ...while the KL to the SFT model stays in the range of Best-of-4's own KL (log 4 - 3/4 = 0.64).
    assert 0.0 < values["eval/kl"] < 3 * values["eval/bon_kl_analytic"], values
