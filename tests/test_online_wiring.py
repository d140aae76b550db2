"""Wiring of the online algorithms (issue 24, section 2): every per-sample log-prob a loss receives is
the right model's log-prob of the right (prompt, completion), checked against log-probs computed
directly from the models. Real embedded:tiny models, real sampling, nothing stubbed but the reward's
inputs recomputed here; the reference / anchor is perturbed away from the policy, so a log-prob
scored by the wrong model shows, and B = k = 2 distinct prompts, so a completion paired with the
wrong prompt shows.

Mutants each test kills (planted by hand once, issue 24):
* the anchor's / reference's log-probs scored by the policy (log-ratio 0): every ``*_scored_*`` test;
* prompts interleaved sample-major while completions are prompt-major: the BOND and J-BOND tests;
* iterative BOND copying the anchor into the policy: ``test_iterative_bond_moves_the_anchor_not_the_policy``.
The same test belongs to every online method: add it here (RLOO, GRPO, PPO next).
"""

from __future__ import annotations

import sys
from types import SimpleNamespace

import pytest
import torch
from lightning import Trainer

from lit_align.algorithms import BOND, JBOND, OnlineDPO
from lit_align.data.batches import BestOfNBatch
from lit_align.data.best_of_n import BestOfNDataModule
from lit_align.online.generation import SamplingSettings
from lit_align.rewards.base import RewardFunction

PROMPTS = ["the film was", "i watched this movie and it"]  # B = 2 distinct prompts (different lengths, too)
K = 2  # samples per prompt: k policy samples (BOND, J-BOND), the pair's samples (online DPO)
ATOL = 1e-3  # fp32 rounding between a batched and a one-row forward; the perturbation moves log-probs by > 0.1


class TextSum(RewardFunction):
    """A reward that rarely ties (the lexicon scores most 6-token samples 0), so every prompt gets a pair."""

    def __call__(self, prompts, completions):
        return torch.tensor([float(sum(map(ord, text)) % 1009) for text in completions])


def direct_logp(model: torch.nn.Module, prompt: list[int], completion: list[int]) -> float:
    """log pi(completion | prompt) of ``model`` from one unpadded forward over that row alone."""
    ids = torch.tensor([prompt + completion])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0].double()
    token_logps = torch.log_softmax(logits[:-1], dim=-1).gather(-1, ids[0, 1:, None])[:, 0]
    return float(token_logps[len(prompt) - 1 :].sum())


def rewards_of(module, prompt_texts: list[str], samples: list[list[list[int]]]) -> torch.Tensor:
    """The module's reward of each sample [B, K], decoded here one sample at a time (not through the module's scoring)."""
    return torch.tensor([[float(module.reward([text], [module.tokenizer.decode(c, skip_special_tokens=True).strip()])[0]) for c in per_prompt] for text, per_prompt in zip(prompt_texts, samples)])


def online_module(cls, num_samples: int, **kwargs):
    """``cls`` on embedded:tiny, connected to sampling settings, with its reference/anchor perturbed away from the policy."""
    torch.manual_seed(0)
    module = cls(model="embedded:tiny", **kwargs)
    module.connect(SimpleNamespace(sampling_settings=lambda: SamplingSettings(num_samples=num_samples, max_new_tokens=6, seed=3)))
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in module.policy.reference.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=generator))
    return module


def batch_of(module) -> BestOfNBatch:
    return BestOfNBatch([module.tokenizer(p, add_special_tokens=True)["input_ids"] for p in PROMPTS], list(PROMPTS))


def record_samples(module, monkeypatch) -> list[dict]:
    """Every real sampling call of ``module``: which model, for which prompts, what came back."""
    calls, sample = [], module.sample

    def recording(model, prompt_ids, num_samples, seed):
        role = "policy" if model is module.policy.policy else "anchor" if model is module.policy.reference else "other"
        samples = sample(model, prompt_ids, num_samples, seed)
        calls.append({"role": role, "prompt_ids": [list(p) for p in prompt_ids], "num_samples": num_samples, "samples": samples})
        return samples

    monkeypatch.setattr(module, "sample", recording)
    return calls


def spy_loss(module, monkeypatch, name: str) -> dict:
    """Capture the arguments of the loss function ``name`` where the algorithm's module looks it up."""
    namespace, seen = sys.modules[type(module).compute_loss.__module__], {}
    real = getattr(namespace, name)

    def spy(*args, **kwargs):
        seen["args"] = args
        return real(*args, **kwargs)

    monkeypatch.setattr(namespace, name, spy)
    return seen


def the_call(calls: list[dict], role: str, num_samples: int, batch: BestOfNBatch) -> list[list[list[int]]]:
    matching = [c for c in calls if c["role"] == role and c["num_samples"] == num_samples]
    assert len(matching) == 1, f"expected one draw of {num_samples} samples from the {role}, got {[(c['role'], c['num_samples']) for c in calls]}"
    assert matching[0]["prompt_ids"] == batch.prompt_ids, "the draw was not for the batch's prompts"
    return matching[0]["samples"]


def check_distillation_logps(module, batch: BestOfNBatch, calls: list[dict], args: tuple, num_anchor_samples: int) -> None:
    """BOND / J-BOND: the loss's log pi(y_best|x) [B], log pi(y|x) [B, k] and log pi_anchor(y|x) [B, k], row by row."""
    policy_best, policy_samples, anchor_samples = (t.detach() for t in args[:3])
    anchor_draw = the_call(calls, "anchor", num_anchor_samples, batch)
    policy_draw = the_call(calls, "policy", K, batch)
    best = rewards_of(module, batch.prompt_texts, anchor_draw).argmax(dim=-1).tolist()  # ties: the first, as Best-of-N
    policy, anchor = module.policy.policy, module.policy.reference
    assert anchor_samples.shape == policy_samples.shape == (len(PROMPTS), K)
    for b, prompt in enumerate(batch.prompt_ids):
        assert policy_best[b].item() == pytest.approx(direct_logp(policy, prompt, anchor_draw[b][best[b]]), abs=ATOL), f"log pi(y_best) of prompt {b}"
        for j, completion in enumerate(policy_draw[b]):
            assert policy_samples[b, j].item() == pytest.approx(direct_logp(policy, prompt, completion), abs=ATOL), f"log pi(y) of prompt {b}, sample {j}"
            assert anchor_samples[b, j].item() == pytest.approx(direct_logp(anchor, prompt, completion), abs=ATOL), f"log pi_anchor(y) of prompt {b}, sample {j}"
    # The check has teeth: the perturbed anchor scores differently from the policy, and the prompts differ.
    assert (policy_samples - anchor_samples).abs().max() > 100 * ATOL


def test_bond_logps_are_scored_by_the_right_model_on_the_right_prompt(monkeypatch):
    module = online_module(BOND, num_samples=3, num_policy_samples=K, quantile_samples=4)
    batch, calls, seen = batch_of(module), record_samples(module, monkeypatch), spy_loss(module, monkeypatch, "bond_loss")
    module.compute_loss(batch, "train")
    check_distillation_logps(module, batch, calls, seen["args"], num_anchor_samples=3)


def test_jbond_logps_are_scored_by_the_right_model_on_the_right_prompt(monkeypatch):
    module = online_module(JBOND, num_samples=2, num_policy_samples=K)
    batch, calls, seen = batch_of(module), record_samples(module, monkeypatch), spy_loss(module, monkeypatch, "jbond_loss")
    module.compute_loss(batch, "train")
    check_distillation_logps(module, batch, calls, seen["args"], num_anchor_samples=2)


def test_online_dpo_pairs_are_scored_by_the_right_model_on_the_right_prompt(monkeypatch):
    module = online_module(OnlineDPO, num_samples=K, beta=0.1, reward=TextSum())
    batch, calls, seen = batch_of(module), record_samples(module, monkeypatch), {}
    pair_loss = module.pair_loss
    monkeypatch.setattr(module, "pair_loss", lambda logps: seen.setdefault("logps", logps) and pair_loss(logps))
    module.compute_loss(batch, "train")
    draw = the_call(calls, "policy", K, batch)
    rewards = rewards_of(module, batch.prompt_texts, draw)
    kept = [b for b in range(len(PROMPTS)) if rewards[b].max() > rewards[b].min()]
    assert kept == [0, 1], f"seeded draws should give both prompts a pair, rewards {rewards.tolist()}"
    logps = seen["logps"]
    for row, b in enumerate(kept):
        chosen, rejected = draw[b][int(rewards[b].argmax())], draw[b][int(rewards[b].argmin())]
        prompt = batch.prompt_ids[b]
        for got, model, completion, what in [
            (logps.policy_chosen, module.policy.policy, chosen, "policy, chosen"),
            (logps.policy_rejected, module.policy.policy, rejected, "policy, rejected"),
            (logps.reference_chosen, module.policy.reference, chosen, "reference, chosen"),
            (logps.reference_rejected, module.policy.reference, rejected, "reference, rejected"),
        ]:
            assert got.sum[row].item() == pytest.approx(direct_logp(model, prompt, completion), abs=ATOL), f"{what}, prompt {b}"
    assert (logps.policy_chosen.sum - logps.reference_chosen.sum).abs().max() > 100 * ATOL


def test_iterative_bond_moves_the_anchor_not_the_policy():
    """After a round (K = 2 steps) the anchor is the trained policy: it moved from its start, and the
    policy was not reset to the old anchor (the wrong copy direction leaves both at the anchor's start)."""
    datamodule = BestOfNDataModule(dataset="embedded:prompts", num_examples=8, num_val_examples=4, batch_size=2, num_samples=2, max_new_tokens=6, max_length=32, max_prompt_length=16)
    module = BOND(model="embedded:micro", anchor_update_interval=2, quantile_samples=2, optimizer=lambda p: torch.optim.SGD(p, lr=0.5))
    anchor_start = [p.detach().clone() for p in module.policy.reference.parameters()]
    trainer = Trainer(max_steps=2, limit_val_batches=0, logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(module, datamodule=datamodule)
    anchor, policy = list(module.policy.reference.parameters()), list(module.policy.policy.parameters())
    assert any(not torch.equal(a, a0) for a, a0 in zip(anchor, anchor_start)), "the anchor did not move at the round's end"
    assert any(not torch.equal(p, a0) for p, a0 in zip(policy, anchor_start)), "the policy was reset to the anchor's start"
    assert all(torch.equal(a, p) for a, p in zip(anchor, policy)), "the anchor is not the policy after the round"
