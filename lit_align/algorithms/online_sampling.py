"""Sampling during training, owned by the algorithm: BOND / J-BOND (anchor and policy samples) and
online DPO (policy samples) draw from their own models with settings they receive once, in
``connect``; the DataModule only serves prompts (and offline samples).

What crosses the data/algorithm boundary is the ``SamplingSettings`` the DataModule declares
(N, generation budget, temperature, base seed): plain config values, read in one explicit step.
Nothing here reads the DataModule while training.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import PreTrainedModel

from lit_align.data.batches import BestOfNBatch
from lit_align.errors import ConfigError
from lit_align.generation import SamplingSettings, sample_completions
from lit_align.modeling import load_tokenizer
from lit_align.scoring import score_completions


class OnlineSampling:
    """Mixin in front of an ``AlignmentModule`` that samples completions while it trains.

    * ``connect(datamodule)`` (the base's hook) takes the DataModule's ``sampling_settings()``;
    * ``sample_and_score`` draws completions of a model for a batch's prompts and scores them with
      ``self.reward`` (decoded as ``lit_align.scoring`` does everywhere);
    * ``batch_index`` is the index of the batch being trained on / validated, for seeding the draws
      (Lightning's ``compute_loss`` signature carries no index).

    The tokenizer is the algorithm's own (``load_tokenizer(model)``, as the DataModule's ``model``
    is linked to the algorithm's), so decoding never waits for the DataModule's set-up.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.tokenizer = load_tokenizer(self.model_name, self.hparams.get("trust_remote_code", False))
        self.sampling: SamplingSettings | None = None
        self.batch_index = 0

    # ----- the one step where data settings reach the algorithm --------------------------------
    def connect(self, datamodule: Any) -> None:
        """Take the sampling settings from ``datamodule`` (a ``BestOfNDataModule``); ConfigError otherwise.
        The CLI calls it before fit/validate; ``AlignmentModule.setup`` calls it when nothing did."""
        super().connect(datamodule)
        settings = getattr(datamodule, "sampling_settings", None)
        if not callable(settings):
            raise ConfigError(
                f"{type(self).__name__} samples its own completions and needs prompts from "
                f"lit_align.data.best_of_n.BestOfNDataModule (data class_path), got {type(datamodule).__name__}"
            )
        self.sampling = settings()

    @property
    def settings(self) -> SamplingSettings:
        if self.sampling is None:
            raise ConfigError(f"{type(self).__name__} has no sampling settings yet: call connect(datamodule) before sampling outside a Trainer")
        return self.sampling

    # ----- drawing -------------------------------------------------------------------------------
    def training_step(self, batch: BestOfNBatch, batch_idx: int) -> torch.Tensor:
        self.batch_index = batch_idx
        return super().training_step(batch, batch_idx)

    def validation_step(self, batch: BestOfNBatch, batch_idx: int) -> None:
        self.batch_index = batch_idx
        super().validation_step(batch, batch_idx)

    def sample(self, model: PreTrainedModel, prompt_ids: list[list[int]], num_samples: int, seed: int) -> list[list[list[int]]]:
        """``num_samples`` completions of ``model`` per prompt; same seed and model: same completions."""
        settings = self.settings
        return sample_completions(model, self.tokenizer, prompt_ids, num_samples, settings.max_new_tokens, settings.temperature, seed=seed)

    def sample_and_score(self, model: PreTrainedModel, batch: BestOfNBatch, num_samples: int, seed: int) -> tuple[list[list[list[int]]], torch.Tensor]:
        """``num_samples`` completions of ``model`` per prompt of ``batch`` and their rewards [B, num_samples] (on this module's device)."""
        samples = self.sample(model, batch.prompt_ids, num_samples, seed)
        return samples, score_completions(self.tokenizer, self.reward, batch.prompt_texts, samples).to(self.device)
