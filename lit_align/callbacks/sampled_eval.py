"""Sampling-based evaluation: reward of policy samples and KL(policy || reference).

Logged under the same tags for every algorithm (``eval/reward``, ``eval/kl``, ``eval/length``),
which is what makes reward-vs-KL comparisons across methods fair.

The evaluation reward follows one rule, here and in ``BestOfNEvaluation`` (``reward_for``):

1. the callback's own ``reward``, when one is configured;
2. else the algorithm's reward (``pl_module.reward``: online DPO, BOND, J-BOND), so eval/reward is
   the quantity the run optimises;
3. else, on the embedded task's prompts, the task's lexicon (its ground truth);
4. else none: eval/kl and eval/length only, and the callback says once why.

The embedded task's lexicon is never used by default on prompts that are not the embedded task's
(it scores foreign text ~0, which would read as a measurement), not even as the algorithm's reward.
On embedded prompts, when the evaluation reward is not the lexicon (e.g. a learned reward model),
``eval/gold_reward`` logs the lexicon too, so over-optimisation of a proxy stays visible. A
checkpoint that monitors eval/reward should follow what is logged (``LoggedMetricCheckpoint``).
"""

from __future__ import annotations

import contextlib
import math
from typing import Callable, ContextManager

import torch
from lightning import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_info
from transformers import PreTrainedModel

from lit_align.data.collate import sequences_with_mask
from lit_align.data.embedded import embedded_rows
from lit_align.data.sources import load_rows
from lit_align.errors import ConfigError, check_range
from lit_align.online.generation import ENGINES, logps_while_sampling_are_exact, sample_completions, sample_completions_with_logps
from lit_align.head import completion_logps
from lit_align.losses.kl import kl_k1
from lit_align.modeling import is_embedded, load_causal_lm
from lit_align.rewards import LexiconSentimentReward, RewardFunction
from lit_align.online.scoring import score_completions


@torch.no_grad()
def sequence_logps_of(model: PreTrainedModel, prompts: list[list[int]], completions: list[list[int]], pad_id: int, batch_size: int = 64) -> torch.Tensor:
    """log pi(y|x) summed over completion tokens, for each (prompt, completion)."""
    device = next(model.parameters()).device
    out = []
    for start in range(0, len(prompts), batch_size):
        input_ids, attention_mask, loss_mask = (t.to(device) for t in sequences_with_mask(prompts[start : start + batch_size], completions[start : start + batch_size], pad_id))
        out.append(completion_logps(model, input_ids, attention_mask, loss_mask).sum.cpu())
    return torch.cat(out) if out else torch.zeros(0)


def standard_error(values: torch.Tensor) -> float:
    """Standard error of the mean of ``values`` [prompts, samples per prompt], prompts as the unit:
    sd(per-prompt means) / sqrt(prompts), so samples of one prompt are not counted as independent; 0 for one prompt."""
    means = values.double().mean(dim=1)
    return (means.std() / means.numel() ** 0.5).item() if means.numel() > 1 else 0.0


def reference_scope(reference: "PreTrainedModel | Callable[[], ContextManager[PreTrainedModel]]") -> ContextManager[PreTrainedModel]:
    """A context yielding the reference model: ``reference`` itself, or the context its callable opens
    (``PolicyWithReference.reference_model``, e.g. the policy with its LoRA adapters off)."""
    return contextlib.nullcontext(reference) if isinstance(reference, torch.nn.Module) else reference()


class SampledEvaluation(Callback):
    """After each validation epoch: sample from the policy on held-out prompts and log

    * ``eval/reward`` — mean reward of the samples, by the rule of the module docstring;
    * ``eval/gold_reward`` — on embedded prompts when that reward is not the lexicon: the lexicon's;
    * ``eval/kl`` — mean of log pi(y|x) - log pi_ref(y|x) over y ~ pi: an unbiased Monte-Carlo
      estimate of the sequence-level KL(pi || pi_ref) (samples are pure ancestral, temperature 1);
    * ``eval/length`` — mean completion length in tokens;
    * ``eval/prompts`` — at the final evaluation when ``final_kl_relative_se`` is set: the prompts
      it drew in all;
    * ``eval/reward_se``, ``eval/kl_se`` — standard errors of eval/reward and eval/kl over prompts
      (``standard_error``: a prompt's samples are not independent of each other, its mean is one draw).

    Args:
        reward: Reward function (``class_path``), used on any prompts. Default (null): the
            algorithm's reward (``pl_module.reward``), else the embedded task's lexicon on
            embedded prompts; the lexicon is never a default on other prompts (module docstring).
        num_prompts: Held-out prompts per evaluation.
        samples_per_prompt: Samples per prompt.
        max_new_tokens: Generation budget.
        kl_reference: ``auto`` uses the module's frozen reference, or loads the starting ``model``
            once (``load_start_model``: the module's dtype and trust_remote_code) when the algorithm
            holds none (ORPO/SFT); a path loads that model; None skips KL.
        seed: Sampling seed: every evaluation draws with the same seed, so curves are less noisy (the
            final evaluation's second draw, on other prompts, with ``seed + 1``).
        prompts: Take the held-out prompts from this dataset's validation split (e.g.
            ``embedded:prompts``; or a file of held-out rows with a ``prompt`` column) instead of the DataModule's
            validation rows, so runs on different DataModules are scored on identical prompts.
        evaluate_at_start: Also evaluate once before the first training step (logged at step 0),
            so every curve starts at the starting model.
        final_num_prompts, final_samples_per_prompt: The evaluation at the last step (``trainer.max_steps``)
            uses these instead (None: the same as the others), so a run's final numbers get a small
            standard error without paying for a large sample at every evaluation.
        engine: How samples are drawn (``lit_align.online.generation``): ``shared_prefill`` (each
            prompt encoded once for its samples, the decode loop the online methods train with) or
            ``generate`` (``model.generate``, for a model whose KV cache cannot be copied row-wise).
            The same draws either way. With ``shared_prefill``, an fp32 policy outside autocast takes
            log pi(y|x) for eval/kl from the logits it sampled from, saving one forward pass over the
            samples (equal to that pass's to fp32 rounding); otherwise, and always with ``generate``,
            from a forward pass after sampling.
        final_kl_relative_se: A target for the final evaluation's SE(eval/kl) / eval/kl, e.g. 0.05.
            When the first ``final_num_prompts`` prompts miss it, more held-out prompts are drawn,
            as many as that first draw says the target needs (``second_draw_size``), and every
            final number is over both draws; ``eval/prompts`` logs how many prompts that was. None:
            one draw of ``final_num_prompts``.
        final_max_prompts: At most this many prompts in the final evaluation's two draws together
            (the held-out prompts available may cap it lower).
    """

    def __init__(
        self,
        reward: RewardFunction | None = None,
        num_prompts: int = 64,
        samples_per_prompt: int = 2,
        max_new_tokens: int = 24,
        kl_reference: str | None = "auto",
        seed: int = 1234,
        prompts: str | None = None,
        evaluate_at_start: bool = False,
        final_num_prompts: int | None = None,
        final_samples_per_prompt: int | None = None,
        engine: str = "shared_prefill",
        final_kl_relative_se: float | None = None,
        final_max_prompts: int = 4096,
    ) -> None:
        check_range(self, "num_prompts", num_prompts, 1, integer=True)
        check_range(self, "samples_per_prompt", samples_per_prompt, 1, integer=True)
        check_range(self, "max_new_tokens", max_new_tokens, 1, integer=True)
        check_range(self, "seed", seed, 0, integer=True)
        check_range(self, "final_num_prompts", final_num_prompts, 1, integer=True, allow_none=True)
        check_range(self, "final_samples_per_prompt", final_samples_per_prompt, 1, integer=True, allow_none=True)
        check_range(self, "final_kl_relative_se", final_kl_relative_se, 0, low_open=True, allow_none=True)
        # With a target, the cap bounds both draws together, so it cannot be below the first draw.
        check_range(self, "final_max_prompts", final_max_prompts, (final_num_prompts or num_prompts) if final_kl_relative_se is not None else 1, integer=True)
        if engine not in ENGINES:
            raise ConfigError(f"{type(self).__name__}: unknown engine {engine!r}; expected one of {', '.join(ENGINES)} (init_args.engine)")
        self.engine = engine
        self.reward = reward
        self.algorithm_reward: RewardFunction | None = None
        self._lexicon: RewardFunction | None = None
        self._said_why = False
        self.num_prompts = num_prompts
        self.samples_per_prompt = samples_per_prompt
        self.max_new_tokens = max_new_tokens
        self.kl_reference = kl_reference
        self.seed = seed
        self.prompts = prompts
        self.evaluate_at_start = evaluate_at_start
        self.final_num_prompts = final_num_prompts or num_prompts
        self.final_samples_per_prompt = final_samples_per_prompt or samples_per_prompt
        self.final_kl_relative_se = final_kl_relative_se
        self.final_max_prompts = final_max_prompts
        self._prompts: dict[int, list[tuple[str, list[int]]]] = {}
        self._loaded_reference: PreTrainedModel | None = None
        self.last: dict[str, float] = {}
        self.last_rewards: torch.Tensor | None = None  # [prompts, samples_per_prompt] of the last measure, when a reward was used

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        # The algorithm's reward, when it trains on one (online DPO, BOND, J-BOND): rule 2 of the module docstring.
        reward = getattr(pl_module, "reward", None)
        self.algorithm_reward = reward if isinstance(reward, RewardFunction) else None

    def _reference(self, pl_module: LightningModule) -> "PreTrainedModel | Callable[[], ContextManager[PreTrainedModel]] | None":
        if self.kl_reference is None:
            return None
        if self.kl_reference == "auto" and pl_module.policy.has_reference_model:
            # The frozen copy, or the policy with its LoRA adapters off: no second copy to load.
            return pl_module.policy.reference_model
        # precomputed / none: the cache covers the training data only, so fresh samples need the model:
        # the start model as the module loads it (its dtype, trust_remote_code), or the named one.
        if self._loaded_reference is None:
            model = pl_module.load_start_model() if self.kl_reference == "auto" else load_causal_lm(self.kl_reference)
            self._loaded_reference = model.to(pl_module.device).eval().requires_grad_(False)
        return self._loaded_reference

    def held_out_prompts(self, datamodule, count: int | None = None) -> list[tuple[str, list[int]]]:
        """(rendered text, token ids) of ``count`` (default ``num_prompts``) evaluation prompts:
        from ``prompts`` if set, else the DataModule's."""
        count = count or self.num_prompts
        if self.prompts is None:
            return datamodule.eval_prompts(count)
        if count not in self._prompts:
            is_generated = is_embedded(self.prompts)
            rows = embedded_rows(self.prompts, "validation", count, datamodule.seed) if is_generated else load_rows(self.prompts)
            texts = [row["prompt"] for row in rows.select(range(min(count, len(rows))))]
            self._prompts[count] = [(datamodule.encoder.render_prompt(t), datamodule.encoder.encode_prompt(t)) for t in texts]
        return self._prompts[count]

    def _embedded_prompts(self, datamodule) -> bool:
        return is_embedded(self.prompts) if self.prompts is not None else bool(getattr(datamodule, "embedded_task", False))

    def reward_for(self, datamodule) -> RewardFunction | None:
        """The evaluation reward by the rule of the module docstring; None (said once) when there is none."""
        if self.reward is not None:
            return self.reward
        embedded = self._embedded_prompts(datamodule)
        algorithm = self.algorithm_reward
        if algorithm is not None and (embedded or not isinstance(algorithm, LexiconSentimentReward)):
            return algorithm
        if embedded:
            self._lexicon = self._lexicon or LexiconSentimentReward()
            return self._lexicon
        if not self._said_why:
            self._said_why = True
            source = self.prompts if self.prompts is not None else getattr(datamodule, "dataset", "")
            why = (
                "the algorithm's reward is the embedded task's lexicon (LexiconSentimentReward), which scores foreign text as ~0, so the "
                "algorithm is likely learning nothing either: set its reward (model.init_args.reward), e.g. "
                if algorithm is not None
                else "no reward is configured and the algorithm has none, and the embedded task's lexicon would score foreign text as ~0. "
                "To log eval/reward, give the callback a reward, e.g. "
            )
            rank_zero_info(
                f"lit_align: {type(self).__name__} logs eval/kl and eval/length only: the prompts ({source}) are not the embedded task, and "
                f"{why}{{class_path: lit_align.rewards.HFClassifierReward, init_args: {{model: <reward model>}}}}."
            )
        return None

    def measure(self, policy: PreTrainedModel, datamodule, reference: "PreTrainedModel | Callable[[], ContextManager[PreTrainedModel]] | None" = None, final: bool = False) -> dict[str, float]:
        """Reward (and KL to ``reference``, if given) of samples from ``policy`` on held-out prompts.

        ``reference`` is a model or a zero-argument callable returning a context that yields one;
        ``final``: with the final evaluation's prompts and samples, and its second draw when
        ``final_kl_relative_se`` asks for one (``second_draw_size``).
        """
        k = self.final_samples_per_prompt if final else self.samples_per_prompt
        held_out = self.held_out_prompts(datamodule, self.final_num_prompts if final else self.num_prompts)
        if not held_out:  # plain-text SFT without a BOS: every prompt is empty, there is nothing to continue
            rank_zero_info("lit_align: SampledEvaluation skipped: the validation data has no non-empty prompt to sample from (plain text)")
            return {}
        draws = self._draw(policy, datamodule, held_out, k, self.seed, reference)
        two_stage = final and self.final_kl_relative_se is not None and "kl" in draws
        if two_stage:
            wanted = self.second_draw_size(draws["kl"], len(held_out))
            extra = self.held_out_prompts(datamodule, len(held_out) + wanted)[len(held_out) :] if wanted else []
            if len(extra) < wanted:  # a user's own validation split can run out of prompts
                rank_zero_info(
                    f"lit_align: {type(self).__name__}: the final evaluation's target SE(KL)/KL < {self.final_kl_relative_se:g} asked for "
                    f"{len(held_out) + wanted} prompts, but only {len(held_out) + len(extra)} held-out prompts exist; it reports over those."
                )
            if extra:  # other prompts, so another seed: its draws are not those of the first prompts again
                more = self._draw(policy, datamodule, extra, k, self.seed + 1, reference)
                draws = {name: torch.cat([values, more[name]]) for name, values in draws.items()}
        self.last_rewards = draws.get("reward")
        result = {"eval/length": draws["length"].mean().item()}
        if "reward" in draws:
            result["eval/reward"] = draws["reward"].mean().item()
            result["eval/reward_se"] = standard_error(draws["reward"])
        if "gold_reward" in draws:
            result["eval/gold_reward"] = draws["gold_reward"].mean().item()
        if "kl" in draws:
            result["eval/kl"] = draws["kl"].mean().item()
            result["eval/kl_se"] = standard_error(draws["kl"])
        if two_stage:
            result["eval/prompts"] = float(len(draws["length"]))
        return result

    def second_draw_size(self, kl: torch.Tensor, drawn: int) -> int:
        """Prompts to add to the final evaluation's ``drawn`` ones so SE(KL)/KL falls under
        ``final_kl_relative_se``: a two-stage design, the first draw sizing the whole sample (Stein's
        sizing rule; the interval is then taken over all prompts).

        SE shrinks as 1/sqrt(prompts), so r = SE/KL needs drawn * (r / target)^2 prompts in all; 1.2x
        that, because r itself is an estimate from the first draw and is as likely low as high. At
        most ``final_max_prompts`` in all; 0 when the first draw meets the target. A KL at or under 0
        (a policy still at its reference) has no relative error to meet: it gets no second draw, as
        the target cannot be met with any sample there. A KL just above 0 is the costly case: its
        relative error is large, so it draws up to the cap.
        """
        mean, se = kl.mean().item(), standard_error(kl)
        if mean <= 0 or se < self.final_kl_relative_se * mean:
            return 0
        needed = math.ceil(1.2 * drawn * (se / (self.final_kl_relative_se * mean)) ** 2)
        return max(0, min(needed, self.final_max_prompts) - drawn)

    def _draw(self, policy: PreTrainedModel, datamodule, held_out: list[tuple[str, list[int]]], k: int, seed: int, reference) -> dict[str, torch.Tensor]:
        """``k`` samples of ``policy`` for each held-out prompt, measured: [prompts, k] tensors of
        ``length``, and of ``reward``, ``gold_reward`` and ``kl`` where they apply."""
        tokenizer = datamodule.tokenizer
        texts, prompt_ids = zip(*held_out)
        was_training = policy.training
        sampled_logps = None
        if reference is not None and self.engine == "shared_prefill" and logps_while_sampling_are_exact(policy):
            samples, sampled_logps = sample_completions_with_logps(policy, tokenizer, list(prompt_ids), k, self.max_new_tokens, seed=seed)
        else:
            samples = sample_completions(policy, tokenizer, list(prompt_ids), k, self.max_new_tokens, seed=seed, engine=self.engine)
        prompts = [p for p in prompt_ids for _ in range(k)]
        completions = [c for per_prompt in samples for c in per_prompt]
        draws = {"length": torch.tensor([[float(len(c)) for c in per_prompt] for per_prompt in samples])}
        reward = self.reward_for(datamodule)
        if reward is not None:
            draws["reward"] = score_completions(tokenizer, reward, list(texts), samples)
            if not isinstance(reward, LexiconSentimentReward) and self._embedded_prompts(datamodule):
                self._lexicon = self._lexicon or LexiconSentimentReward()
                draws["gold_reward"] = score_completions(tokenizer, self._lexicon, list(texts), samples)
        if reference is not None:
            pad = tokenizer.pad_token_id
            policy.eval()
            policy_logps = sampled_logps.flatten() if sampled_logps is not None else sequence_logps_of(policy, prompts, completions, pad)
            # A model, or a context that yields one (the adapter-off policy): entered only after the
            # policy's own log-probs are taken.
            with reference_scope(reference) as reference_model:
                draws["kl"] = kl_k1(policy_logps, sequence_logps_of(reference_model, prompts, completions, pad)).view(len(prompt_ids), k)
        policy.train(was_training)
        return draws

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # Logged straight to the loggers: Lightning's self.log has no step-level slot before step 1.
        if not self.evaluate_at_start or trainer.datamodule is None or trainer.fast_dev_run:
            return
        start = self.measure(pl_module.policy.policy, trainer.datamodule, self._reference(pl_module))
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.log_metrics(start, step=trainer.global_step)

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking or trainer.datamodule is None:
            return
        final = 0 < trainer.max_steps <= trainer.global_step
        self.last = self.measure(pl_module.policy.policy, trainer.datamodule, self._reference(pl_module), final=final)
        pl_module.log_dict(self.last, sync_dist=True)
