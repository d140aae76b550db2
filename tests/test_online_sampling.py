"""Sampling owned by the algorithm (lit_align.online.sampling): the settings come from the
DataModule once, in ``connect`` (Trainer set-up does it when nothing else did), draws are seeded and
leave the caller's RNG alone, and a DataModule that cannot serve online prompts is a ConfigError."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
from lightning import Trainer

from lit_align.algorithms import BOND, OnlineDPO
from lit_align.data.best_of_n import BestOfNDataModule
from lit_align.data.pairwise import PairwiseDataModule
from lit_align.errors import ConfigError
from lit_align.online.generation import SamplingSettings
from lit_align.rewards import LexiconSentimentReward


def prompts(num_samples=3, max_new_tokens=5, seed=0):
    dm = BestOfNDataModule(model="embedded:micro", dataset="embedded:prompts", num_examples=8, num_val_examples=4, batch_size=4,
                           num_samples=num_samples, max_new_tokens=max_new_tokens, max_length=32, max_prompt_length=16, seed=seed)
    dm.setup("fit")
    return dm


def quiet_trainer(**kwargs):
    return Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, **kwargs)


def test_draws_are_seeded_scored_as_decoded_and_leave_the_rng_alone():
    dm = prompts()
    module = BOND(model="embedded:micro")
    module.connect(dm)
    assert module.sampling == SamplingSettings(num_samples=3, max_new_tokens=5, temperature=1.0, seed=0)
    batch = dm.collate(dm.train_examples[:4])
    state = torch.get_rng_state()
    rollout = module.rollout(module.policy.reference, batch, 3, seed=7)
    samples, rewards = rollout.completions_by_prompt(), rollout.rewards_by_prompt()
    assert torch.equal(torch.get_rng_state(), state)  # the caller's RNG stream is untouched
    again = module.rollout(module.policy.reference, batch, 3, seed=7).completions_by_prompt()
    other = module.rollout(module.policy.reference, batch, 3, seed=8).completions_by_prompt()
    assert samples == again and samples != other
    assert rewards.shape == (4, 3) and all(0 < len(c) <= 5 for per_prompt in samples for c in per_prompt)  # the data's max_new_tokens
    texts = [module.tokenizer.decode(c, skip_special_tokens=True).strip() for c in samples[0]]
    assert rewards[0].tolist() == LexiconSentimentReward()([batch.prompt_texts[0]] * 3, texts).tolist()


def test_trainer_setup_connects_the_datamodule_once():
    dm = prompts(num_samples=2, max_new_tokens=3, seed=4)
    module = BOND(model="embedded:micro", quantile_samples=2)
    assert module.sampling is None
    quiet_trainer(limit_val_batches=1).validate(module, datamodule=dm)
    assert module.sampling == dm.sampling_settings() == SamplingSettings(2, 3, 1.0, 4)
    # A connection made before (e.g. by the CLI) is kept, not re-read from the trainer.
    explicit = SamplingSettings(2, 4, 1.0, 9)
    module.connect(SimpleNamespace(sampling_settings=lambda: explicit))
    quiet_trainer(limit_val_batches=1).validate(module, datamodule=dm)
    assert module.sampling is explicit


def test_wrong_datamodule_and_unconnected_sampling_are_config_errors(tmp_path):
    module = OnlineDPO(model="embedded:micro")
    with pytest.raises(ConfigError, match="OnlineDPO has no sampling settings yet: call connect"):
        module.sample(module.policy.policy, [[1, 2]], 2, seed=0)
    with pytest.raises(ConfigError, match=r"OnlineDPO samples its own completions.*PromptDataModule.*got PairwiseDataModule"):
        module.connect(PairwiseDataModule())
    path = tmp_path / "bon.jsonl"
    path.write_text(json.dumps({"prompt": "the film was", "completions": ["great .", "bad ."], "rewards": [1.0, -0.3]}) + "\n")
    offline = BestOfNDataModule(model="embedded:micro", dataset=str(path), val_split="train", num_samples=2, batch_size=1)
    offline.setup("fit")
    module.connect(offline)
    with pytest.raises(ConfigError, match="OnlineDPO samples its own completions from the current policy.*PromptDataModule.*mode: online"):
        module.compute_loss(offline.collate(offline.train_examples), "train")


def test_prompt_datamodule_serves_prompts_for_any_k_and_rollouts_carry_log_probs():
    from lit_align.data.batches import PromptBatch
    from lit_align.online import PromptDataModule, token_logps

    with pytest.raises(ConfigError, match=r"PromptDataModule: num_samples must be an integer in \[1"):
        PromptDataModule(num_samples=0)
    dm = PromptDataModule(model="embedded:micro", num_samples=1, max_new_tokens=4, num_examples=8, num_val_examples=4, batch_size=4, max_length=32, max_prompt_length=16)
    dm.setup("fit")
    batch = dm.collate(dm.train_examples[:3])
    assert type(batch) is PromptBatch and len(batch) == 3 and not batch.has_completions
    module = OnlineDPO(model="embedded:micro")
    module.connect(dm)
    assert module.sampling == SamplingSettings(1, 4, 1.0, 0)
    rollout = module.rollout(module.policy.policy, batch, 2, seed=3, sample_logps=True, reference_logps=True)
    assert len(rollout) == 3 and rollout.num_rows == 6 and rollout.rewards.shape == (6,)
    with torch.no_grad():
        direct = token_logps(module.policy.policy.eval(), rollout)
    torch.testing.assert_close(rollout.sample_logps, direct)
    # At the start the policy is its reference: the same per-token log-probs, nonzero on completions only.
    torch.testing.assert_close(rollout.reference_logps, rollout.sample_logps)
    assert bool((rollout.sample_logps[rollout.completion_mask == 0] == 0).all()) and bool((rollout.sample_logps[rollout.completion_mask == 1] < 0).all())
