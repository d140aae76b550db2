"""Evaluation of Best-of-N distillation: how close the policy gets to Best-of-N of the reference.

Adds to ``SampledEvaluation``'s ``eval/reward``, ``eval/kl`` and ``eval/length``:

* ``eval/quantile`` — mean reward quantile of the policy samples among reference samples of the
  same prompt (MC estimate of p_le); the reference itself scores about 1/2 and Best-of-N
  N/(N + 1) for a continuous reward;
* ``eval/bon_reward`` — the Best-of-N reward of the reference, measured (unbiased estimate of the
  expected maximum of N rewards from ``num_reference_samples`` samples per prompt);
* ``eval/reference_reward`` — the reference's own mean reward (the starting point);
* ``eval/bon_kl_analytic`` — log N - (N - 1)/N, the KL of Best-of-N to the reference for a
  continuous reward: the reference line for ``eval/kl``;
* ``eval/bon_kl_ties`` — the KL of Best-of-N of the reference samples with ties counted
  (``empirical_bon_kl``): lower than the analytic value when rewards tie (or N is close to
  ``num_reference_samples``).

The reference here is always the INITIAL model: iterative BOND and J-BOND move their anchor, and
measuring against a moving anchor would hide the drift that ``eval/kl`` is meant to show.

The reward is ``SampledEvaluation``'s rule (the configured one, else the algorithm's, else the
lexicon on embedded prompts only); without one, only ``eval/kl``, ``eval/length`` and the analytic
KL are logged, never a quantile of foreign text under the embedded task's lexicon.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ContextManager

import torch
from lightning import LightningModule, Trainer
from transformers import PreTrainedModel

from lit_align.callbacks.sampled_eval import SampledEvaluation, reference_scope
from lit_align.online.generation import sample_completions
from lit_align.losses.bond import analytic_bon_kl, empirical_bon_kl, expected_best_of_n, quantile_estimate
from lit_align.online.scoring import score_completions
from lit_align.rewards import RewardFunction


class BestOfNEvaluation(SampledEvaluation):
    """``SampledEvaluation`` plus the Best-of-N reference points (see module docstring).

    Args:
        best_of_n: N of the Best-of-N baseline; default: the DataModule's ``num_samples``.
        num_reference_samples: Reference samples per prompt for the quantile and Best-of-N
            estimates (at least ``best_of_n``); drawn once per run, the reference does not change.
        reward, num_prompts, samples_per_prompt, max_new_tokens, kl_reference, seed, prompts,
        evaluate_at_start: See ``SampledEvaluation`` (``reward``: default the algorithm's, as there);
            ``kl_reference="auto"`` means the initial model here.
    """

    def __init__(
        self,
        best_of_n: int | None = None,
        num_reference_samples: int = 16,
        reward: RewardFunction | None = None,
        num_prompts: int = 64,
        samples_per_prompt: int = 2,
        max_new_tokens: int = 24,
        kl_reference: str | None = "auto",
        seed: int = 1234,
        prompts: str | None = None,
        evaluate_at_start: bool = False,
    ) -> None:
        super().__init__(
            reward,
            num_prompts=num_prompts,
            samples_per_prompt=samples_per_prompt,
            max_new_tokens=max_new_tokens,
            kl_reference=kl_reference,
            seed=seed,
            prompts=prompts,
            evaluate_at_start=evaluate_at_start,
        )
        self.best_of_n = best_of_n
        self.num_reference_samples = num_reference_samples
        self._reference_rewards: torch.Tensor | None = None

    def initial_reference(self, pl_module: LightningModule) -> "PreTrainedModel | Callable[[], ContextManager[PreTrainedModel]]":
        """The starting model: the module's reference (a model, or a context opener as in
        ``SampledEvaluation.measure``) unless it is training state (a moving anchor, kept in
        checkpoints), else the start model loaded once by ``load_start_model``."""
        if not pl_module.reference_in_checkpoint and pl_module.policy.has_reference_model:
            return pl_module.policy.reference_model
        if self._loaded_reference is None:
            self._loaded_reference = pl_module.load_start_model().to(pl_module.device).eval().requires_grad_(False)
        return self._loaded_reference

    def _reference(self, pl_module: LightningModule) -> "PreTrainedModel | Callable[[], ContextManager[PreTrainedModel]] | None":
        if self.kl_reference == "auto":
            return self.initial_reference(pl_module)
        return super()._reference(pl_module)

    def reference_rewards(self, reference: "PreTrainedModel | Callable[[], ContextManager[PreTrainedModel]]", datamodule, n: int, reward: RewardFunction) -> torch.Tensor:
        """Rewards [P, m] under ``reward`` of m reference samples per evaluation prompt, drawn once and cached."""
        if self._reference_rewards is None:
            texts, prompt_ids = zip(*self.held_out_prompts(datamodule))
            m = max(self.num_reference_samples, n)
            with reference_scope(reference) as model:
                samples = sample_completions(model, datamodule.tokenizer, list(prompt_ids), m, self.max_new_tokens, batch_size=256, seed=self.seed + 1)
            self._reference_rewards = score_completions(datamodule.tokenizer, reward, list(texts), samples)
        return self._reference_rewards

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking or trainer.datamodule is None:
            return
        datamodule = trainer.datamodule
        n = self.best_of_n or getattr(datamodule, "num_samples", 4)
        self.last = self.measure(pl_module.policy.policy, datamodule, self._reference(pl_module))
        self.last["eval/bon_kl_analytic"] = analytic_bon_kl(n)
        reward = self.reward_for(datamodule)
        if self.last_rewards is not None and reward is not None:
            # The policy samples' rewards of this measure: no second draw for the quantile.
            policy_rewards = self.last_rewards.view(-1, self.samples_per_prompt)
            reference_rewards = self.reference_rewards(self.initial_reference(pl_module), datamodule, n, reward)
            self.last.update({
                "eval/quantile": quantile_estimate(policy_rewards, reference_rewards).mean().item(),
                "eval/bon_reward": expected_best_of_n(reference_rewards, n).mean().item(),
                "eval/reference_reward": reference_rewards.mean().item(),
                "eval/bon_kl_ties": empirical_bon_kl(reference_rewards, n).mean().item(),
            })
        pl_module.log_dict(self.last, sync_dist=True)
