"""Online DPO: pair labelling (chosen = higher reward, ties dropped and counted), the loss and its
gradients are DPO's on the constructed pairs, the sampling snapshot, and a short run that raises the
sampled reward (the shipped recipe runs in test_configs)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from lightning import Trainer

from lit_align.algorithms import OnlineDPO
from lit_align.algorithms.online_dpo import label_pairs
from lit_align.data.best_of_n import BestOfNDataModule
from lit_align.online.scoring import score_completions
from lit_align.losses import dpo_loss
from lit_align.ops import sequence_logps
from lit_align.rewards import LexiconSentimentReward, RewardFunction


class WordCountMod3(RewardFunction):
    """A deterministic reward with frequent ties."""

    def __call__(self, prompts, completions):
        return torch.tensor([float(len(c.split()) % 3) for c in completions])


class Constant(RewardFunction):
    def __call__(self, prompts, completions):
        return torch.zeros(len(completions))


def prompts_data(n=8, batch_size=8, max_new_tokens=8):
    datamodule = BestOfNDataModule(model="embedded:micro", dataset="embedded:prompts", mode="online", num_examples=n, num_val_examples=4, batch_size=batch_size, num_samples=2, max_new_tokens=max_new_tokens, max_length=32, max_prompt_length=16)
    datamodule.setup()
    return datamodule, datamodule.collate(datamodule.train_examples[:batch_size])


def attached(module, datamodule, step=0):
    # compute_loss outside a Trainer: the connect step (sampling settings), the step and the rank.
    module.connect(datamodule)
    module.trainer = SimpleNamespace(global_step=step, global_rank=0)
    return module


def test_label_pairs_best_against_worst_and_ties_dropped():
    rewards = torch.tensor([[0.1, 0.5, 0.3], [0.3, 0.3, 0.3], [0.9, -0.2, 0.9], [0.0, 0.0, 1.0]])
    pairs = label_pairs(rewards)
    assert pairs.prompts.tolist() == [0, 2, 3]  # prompt 1: every sample ties
    assert pairs.chosen.tolist() == [1, 0, 2] and pairs.rejected.tolist() == [0, 1, 0]  # ties: lowest index
    assert bool((rewards[pairs.prompts, pairs.chosen] > rewards[pairs.prompts, pairs.rejected]).all())
    with pytest.raises(ValueError, match="samples >= 2"):
        label_pairs(torch.zeros(3, 1))


def test_sampled_pairs_prefer_the_higher_reward_and_count_ties():
    datamodule, batch = prompts_data()
    reward = WordCountMod3()
    module = attached(OnlineDPO(model="embedded:micro", reward=reward, num_samples=3), datamodule)
    pairs, logs = module.sample_pairs(batch, "train")
    # The same draws, scored independently: how many prompts tie.
    rewards = module.rollout(module.policy.policy, batch, 3, seed=module.draw_seed("train")).rewards_by_prompt()
    ties = int((rewards.amax(-1) == rewards.amin(-1)).sum())
    assert 0 < ties < len(batch)  # the test exercises both cases
    assert logs["online/ties"].item() == ties and logs["online/pairs"].item() == len(batch) - ties == pairs.num_pairs
    completions = [row[mask.bool()].tolist() for row, mask in zip(pairs.input_ids, pairs.loss_mask)]
    scores = score_completions(datamodule.tokenizer, reward, [""] * len(completions), [[c] for c in completions]).flatten()
    n = pairs.num_pairs
    assert bool((scores[:n] > scores[n:]).all())
    assert logs["online/reward"].item() == pytest.approx(rewards.mean().item())


def test_a_batch_of_ties_gives_no_update():
    datamodule, batch = prompts_data()
    module = attached(OnlineDPO(model="embedded:micro", reward=Constant()), datamodule)
    loss, logs = module.compute_loss(batch, "train")
    assert loss.item() == 0.0 and logs["online/ties"].item() == len(batch) and logs["online/pairs"].item() == 0
    loss.backward()
    assert all(p.grad is None for p in module.policy.policy.parameters())


def test_loss_and_gradients_are_dpo_on_the_constructed_pairs():
    datamodule, batch = prompts_data()
    module = attached(OnlineDPO(model="embedded:micro", beta=0.2, reward=LexiconSentimentReward()), datamodule)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)  # a policy apart from its reference, so the log-ratios are not all 0
        for p in module.policy.policy.parameters():
            p.data.add_(0.05 * torch.randn_like(p))
    pairs, _ = module.sample_pairs(batch, "train")
    loss, _ = module.compute_loss(batch, "train")  # samples again: same seed, same pairs
    online_grads = torch.autograd.grad(loss, list(module.policy.policy.parameters()))
    # DPO by hand on the same pairs: full logits, the plain log-prob sum, Eq. 7.
    policy = sequence_logps(module.policy.policy(input_ids=pairs.input_ids, attention_mask=pairs.attention_mask).logits, pairs.input_ids, pairs.loss_mask).sum
    with torch.no_grad():
        reference = sequence_logps(module.policy.reference(input_ids=pairs.input_ids, attention_mask=pairs.attention_mask).logits, pairs.input_ids, pairs.loss_mask).sum
    n = pairs.num_pairs
    expected = dpo_loss(policy[:n], policy[n:], reference[:n], reference[n:], beta=0.2).losses.mean()
    assert loss.item() == pytest.approx(expected.item(), abs=1e-5)
    assert abs(expected.item() - 0.6931) > 1e-3  # not the trivial init value
    for got, want in zip(online_grads, torch.autograd.grad(expected, list(module.policy.policy.parameters()))):
        assert torch.allclose(got, want, atol=1e-5)


def test_sample_interval_draws_from_a_snapshot_refreshed_every_k_steps():
    datamodule, _ = prompts_data()
    module = attached(OnlineDPO(model="embedded:micro", sample_interval=2), datamodule)
    first = module.sampling_policy("train")
    assert first is not module.policy.policy and all(torch.equal(a, b) for a, b in zip(first.parameters(), module.policy.policy.parameters()))
    with torch.no_grad():
        next(module.policy.policy.parameters()).add_(1.0)  # an optimiser step
    attached(module, datamodule, step=1)
    assert not torch.equal(next(module.sampling_policy("train").parameters()), next(module.policy.policy.parameters()))
    attached(module, datamodule, step=2)
    assert torch.equal(next(module.sampling_policy("train").parameters()), next(module.policy.policy.parameters()))
    assert module.sampling_policy("val") is module.policy.policy  # validation samples the current policy
    module.sample_interval = 1
    assert module.sampling_policy("train") is module.policy.policy  # K = 1: fully online
    assert not any(name.startswith("_snapshot") for name, _ in module.named_modules())  # not trained, not checkpointed


def test_short_run_raises_the_sampled_gold_reward():
    datamodule, _ = prompts_data(n=256, batch_size=16)
    module = OnlineDPO(model="embedded:micro", beta=0.1, optimizer=lambda p: torch.optim.AdamW(p, lr=3e-3), warmup_ratio=0.0, lr_schedule="constant")
    module.connect(datamodule)  # to sample before fit; fit's set-up keeps this connection
    held_out = datamodule.val_examples + datamodule.train_examples[-28:]  # 32 prompts, fixed draws

    def sampled_reward() -> float:
        samples = module.sample(module.policy.policy, [e["prompt_ids"] for e in held_out], 4, seed=123)
        return score_completions(module.tokenizer, LexiconSentimentReward(), [e["prompt_text"] for e in held_out], samples).mean().item()

    before = sampled_reward()
    trainer = Trainer(max_steps=15, limit_val_batches=0, logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(module, datamodule=datamodule)
    after = sampled_reward()
    assert after > before + 0.2, (before, after)
    assert "train/online/ties" in trainer.callback_metrics and "train/rewards/accuracies" in trainer.callback_metrics

