"""Sampling during training, owned by the algorithm: every online method (online DPO, BOND / J-BOND,
and policy-gradient methods) draws from its own models with settings it receives once, in
``connect``; the DataModule only serves prompts (and offline samples).

What crosses the data/algorithm boundary is the ``SamplingSettings`` the DataModule declares
(k, generation budget, temperature, base seed): plain config values, read in one explicit step.
Nothing here reads the DataModule while training.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import PreTrainedModel

from lit_align.errors import ConfigError
from lit_align.modeling import load_tokenizer
from lit_align.online.generation import SamplingSettings, sample_completions
from lit_align.online.rollout import Rollout, token_logps
from lit_align.online.scoring import score_completions
from lit_align.online.seeding import DEFAULT_LAYOUT, SeedLayout, sample_seed
from lit_align.rewards import LexiconSentimentReward, RewardFunction


class OnlineSampling:
    """Mixin in front of an ``AlignmentModule`` that samples completions while it trains.

    * ``connect(datamodule)`` (the base's hook) takes the DataModule's ``sampling_settings()``;
    * ``sample`` draws completion ids of a model (THE one sampling call: tests replay it);
    * ``rollout`` samples, scores with ``reward`` and builds a ``Rollout`` (optionally with the
      per-token log-probs of the sampling policy and of the reference);
    * ``draw_seed(stage, stream)`` is the seed of a draw (``lit_align.online.seeding``), from the
      optimiser step and ``batch_index``, the index of the batch being trained on / validated
      (Lightning's ``compute_loss`` signature carries no index).

    The tokenizer is the algorithm's own (``load_tokenizer(model)``, as the DataModule's ``model``
    is linked to the algorithm's), so decoding never waits for the DataModule's set-up.

    Args:
        reward: Reward r(prompt, completion) that scores the samples (``class_path``): the embedded
            task's lexicon by default, or a learned one, e.g. ``lit_align.rewards.HFClassifierReward``
            on a model exported by ``configs/reward_model.yaml``.
        **kwargs: See the algorithm this mixin stands in front of.
    """

    reward: RewardFunction
    # The strides of this method's seeds (``lit_align.online.seeding``).
    seed_layout: SeedLayout = DEFAULT_LAYOUT

    def __init__(self, reward: RewardFunction | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.reward = reward or LexiconSentimentReward()
        self.tokenizer = load_tokenizer(self.model_name, self.hparams.get("trust_remote_code", False))
        self.sampling: SamplingSettings | None = None
        self.batch_index = 0
        # What sampling cost so far (this process): completions drawn and reward calls per completion,
        # the costs an offline method pays once for its dataset and an online one at every step.
        self.samples_drawn = 0
        self.reward_queries = 0

    # ----- the one step where data settings reach the algorithm --------------------------------
    def connect(self, datamodule: Any) -> None:
        """Take the sampling settings from ``datamodule`` (a ``PromptDataModule``); ConfigError otherwise.
        The CLI calls it before fit/validate; ``AlignmentModule.setup`` calls it when nothing did."""
        super().connect(datamodule)
        settings = getattr(datamodule, "sampling_settings", None)
        if not callable(settings):
            raise ConfigError(
                f"{type(self).__name__} samples its own completions and needs prompts from lit_align.online.PromptDataModule "
                f"or lit_align.data.best_of_n.BestOfNDataModule (data class_path), got {type(datamodule).__name__}"
            )
        self.sampling = settings()

    @property
    def settings(self) -> SamplingSettings:
        if self.sampling is None:
            raise ConfigError(f"{type(self).__name__} has no sampling settings yet: call connect(datamodule) before sampling outside a Trainer")
        return self.sampling

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        self.batch_index = batch_idx
        return super().training_step(batch, batch_idx)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self.batch_index = batch_idx
        super().validation_step(batch, batch_idx)

    def draw_seed(self, stage: str, stream: int = 0) -> int:
        """Seed of this step's draw number ``stream`` (< ``seed_layout.step_stride``) in ``stage``."""
        return sample_seed(self.settings.seed, stage, self.global_step, self.batch_index, stream, self.global_rank, self.seed_layout)

    # ----- drawing -------------------------------------------------------------------------------
    def sample(self, model: PreTrainedModel, prompt_ids: list[list[int]], num_samples: int, seed: int) -> list[list[list[int]]]:
        """``num_samples`` completions of ``model`` per prompt; same seed and model: same completions.
        Each prompt is encoded once for its samples (``engine="shared_prefill"``: the same draws as
        ``model.generate``, without its k prompt passes)."""
        settings = self.settings
        self.samples_drawn += len(prompt_ids) * num_samples
        return sample_completions(model, self.tokenizer, prompt_ids, num_samples, settings.max_new_tokens, settings.temperature, seed=seed, engine="shared_prefill")

    def score(self, prompt_texts: list[str], samples: list[list[list[int]]]) -> torch.Tensor:
        """Rewards [B, k] of k completions per prompt under ``reward`` (decoded as ``lit_align.online.scoring`` does)."""
        self.reward_queries += sum(len(per_prompt) for per_prompt in samples)
        return score_completions(self.tokenizer, self.reward, prompt_texts, samples)

    def rollout(self, model: PreTrainedModel, batch: Any, num_samples: int, seed: int, sample_logps: bool = False, reference_logps: bool = False) -> Rollout:
        """k = ``num_samples`` completions of ``model`` per prompt of ``batch`` (a ``PromptBatch``),
        scored, as a ``Rollout`` on this module's device.

        ``sample_logps``: also the per-token log-probs of ``model`` itself (the behaviour policy), from
        one no-grad forward in eval mode right after sampling, as TRL and OpenRLHF take them;
        ``reference_logps``: also those of the reference (``policy.reference_model()``).
        """
        samples = self.sample(model, batch.prompt_ids, num_samples, seed)
        rollout = Rollout.build(batch.prompt_ids, samples, self.score(batch.prompt_texts, samples), num_samples, self.tokenizer.pad_token_id, self.device)
        if sample_logps:
            rollout.sample_logps = self.no_grad_token_logps(model, rollout)
        if reference_logps:
            with self.policy.reference_model() as reference:
                rollout.reference_logps = self.no_grad_token_logps(reference, rollout)
        return rollout

    @torch.no_grad()
    def no_grad_token_logps(self, model: PreTrainedModel, rollout: Rollout) -> torch.Tensor:
        """Per-token log-probs [R, T-1] of ``model`` on ``rollout``, in eval mode (as it sampled), no grad."""
        was_training = model.training
        model.eval()
        try:
            return token_logps(model, rollout, self.policy.head_mode)
        finally:
            model.train(was_training)
