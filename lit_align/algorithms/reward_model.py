"""``RewardModel``: a Bradley–Terry reward model r(x, y) trained on preference pairs.

Chosen and rejected rows of a ``PairwiseBatch`` go through ONE forward of a causal-LM backbone;
a scalar head on the last real token scores each (``lit_align.reward_head``). It subclasses
``AlignmentModule`` with ``reference='none'``: the base then holds one model — here a Hugging Face
``*ForSequenceClassification`` instead of a causal LM — and supplies the optimiser and LR schedule,
logging under ``train/``/``val/``, the metric bookkeeping and the FSDP-gathered export path, so
this file holds only what is specific to a reward model. The export is an
``AutoModelForSequenceClassification`` (num_labels = 1) that ``lit_align.rewards.HFClassifierReward``
and any HF tool load; see docs/reward_models.md.
"""

from __future__ import annotations

from typing import Any

import torch

from lit_align.algorithms.base import AlignmentModule
from lit_align.data.batches import PairwiseBatch
from lit_align.errors import check_range
from lit_align.losses import bradley_terry_loss
from lit_align.metrics.reward_model import GoldRankCorrelation, RewardModelMetrics
from lit_align.modeling import load_tokenizer
from lit_align.reward_head import build_sequence_classifier, export_reward_model, sequence_rewards
from lit_align.rewards.base import RewardFunction
from lit_align.online.scoring import decode_completion

POLICY_PREFIX = "policy.policy."


class RewardModel(AlignmentModule):
    """Bradley–Terry reward model: loss -log sigma(r(x, y_w) - r(x, y_l) - m) + c (r_w + r_l)^2
    (``lit_align.losses.bradley_terry_loss``) on a ``PairwiseDataModule``.

    Args:
        margin: Llama 2's margin m (arXiv 2307.09288, Eq. 2) for every pair; a batch that carries a
            per-pair ``margin`` tensor uses that instead. 0 is the plain Bradley–Terry loss.
        center_coefficient: c, the reward-centring penalty of Eisenstein et al. 2023
            (arXiv 2312.09244; TRL's ``center_rewards_coefficient``, suggested 0.01). 0 is off.
        gold_reward: A ground-truth reward (``class_path``, e.g. the embedded task's
            ``LexiconSentimentReward``). When set, validation also logs ``val/gold_spearman``: the
            rank correlation between the learned and the gold reward over every validation
            completion (chosen and rejected); the texts are decoded from the batch.
        **kwargs: See ``AlignmentModule``. ``model`` is the backbone (any causal-LM checkpoint or
            ``embedded:*``); ``reference`` must stay ``none``; ``head_mode``/``lora`` are unused.
    """

    default_reference = "none"
    supported_references = ("none",)
    unsupported_reference_reason = "a reward model has no reference policy"

    def __init__(self, margin: float = 0.0, center_coefficient: float = 0.0, gold_reward: RewardFunction | None = None, **kwargs: Any) -> None:
        check_range(self, "margin", margin, 0.0, None)
        check_range(self, "center_coefficient", center_coefficient, 0.0, None)
        super().__init__(**kwargs)
        self.margin = margin
        self.center_coefficient = center_coefficient
        self.gold_reward = gold_reward
        self.tokenizer = load_tokenizer(self.model_name, self.hparams.get("trust_remote_code", False))
        self.gold_correlation = GoldRankCorrelation() if gold_reward is not None else None

    def configure_metrics(self) -> RewardModelMetrics:
        return RewardModelMetrics()

    def load_start_model(self):
        """The backbone of ``model`` with a one-output head (``build_sequence_classifier``)."""
        trust = self.hparams.get("trust_remote_code", False)
        return build_sequence_classifier(self.model_name, load_tokenizer(self.model_name, trust), self.hparams.get("dtype"), trust)

    @property
    def classifier(self):
        """The ``*ForSequenceClassification`` model being trained."""
        return self.policy.policy

    @classmethod
    def algorithm_name(cls) -> str:
        return "reward_model"

    def score(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """r(x, y) of each row (float32), pooled on its last attended token."""
        return sequence_rewards(self.classifier, input_ids, attention_mask)

    def compute_loss(self, batch: PairwiseBatch, stage: str) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        rewards = self.score(batch.input_ids, batch.attention_mask)
        n = batch.num_pairs
        margin = getattr(batch, "margin", None)
        out = bradley_terry_loss(rewards[:n], rewards[n:], self.margin if margin is None else margin.to(rewards), self.center_coefficient)
        logs = self.track_metrics(stage, out.chosen_rewards, out.rejected_rewards)
        if self.center_coefficient:
            logs = {**logs, "centering_loss": out.centering_losses.mean()}
        if stage == "val" and self.gold_correlation is not None:
            self.gold_correlation.update(rewards, self.gold_scores(batch).to(rewards.device))
        return out.losses.mean(), logs

    def gold_scores(self, batch: PairwiseBatch) -> torch.Tensor:
        """The gold reward of every row, on prompt and completion decoded as ``score_completions`` does."""
        prompts, completions = [], []
        for ids, attended, completion in zip(batch.input_ids.tolist(), batch.attention_mask.tolist(), batch.loss_mask.tolist()):
            prompts.append([t for t, a, c in zip(ids, attended, completion) if a and not c])
            completions.append([t for t, c in zip(ids, completion) if c])
        decode = lambda rows: [decode_completion(self.tokenizer, r) for r in rows]  # noqa: E731 - the one decoding convention
        return self.gold_reward(decode(prompts), decode(completions)).float()

    def on_validation_epoch_end_metrics(self) -> dict[str, torch.Tensor]:
        values = super().on_validation_epoch_end_metrics()
        if self.gold_correlation is not None and self.gold_correlation.update_count:
            values["gold_spearman"] = self.gold_correlation.compute()
            self.gold_correlation.reset()
        return values

    def export(self, directory: str, tokenizer: Any = None, state_dict: dict[str, torch.Tensor] | None = None) -> None:
        """Write the classifier and tokenizer with ``save_pretrained`` (``export_reward_model``).

        ``state_dict``: this module's full state gathered from FSDP shards; a fresh classifier is
        built from ``model`` and loaded with it first.
        """
        model = self.classifier
        if state_dict is not None:
            model = self.load_start_model()
            model.load_state_dict({k[len(POLICY_PREFIX) :]: v for k, v in state_dict.items() if k.startswith(POLICY_PREFIX)})
        export_reward_model(model, tokenizer if tokenizer is not None else self.tokenizer, directory)
