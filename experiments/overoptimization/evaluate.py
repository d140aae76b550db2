"""Scoring a policy with the gold reward AND every proxy, and its KL to the SFT start.

``Evaluator.measure`` samples from a policy on held-out prompts (the embedded task's ``test``
split, which no training data of the study uses) and returns the mean gold reward, the mean score
of each proxy reward model, their rank correlation with gold on these very samples (how well the
proxy still tracks gold where the policy now is), and the sampled KL(pi || SFT) = E_y~pi[log pi(y|x)
- log pi_SFT(y|x)] (the estimate ``lit_align.callbacks.SampledEvaluation`` uses).
``StudyEvaluation`` is the Lightning callback that calls it at step 0 and every ``every`` steps of a
run and writes the points to a JSON file.
"""

from __future__ import annotations

import json
import os

import numpy as np
import torch
from lightning import Callback, LightningModule, Trainer
from scipy.stats import spearmanr

from lit_align.callbacks.sampled_eval import sequence_logps_of
from lit_align.data.embedded import embedded_rows
from lit_align.data.tokenize import PromptCompletionEncoder
from lit_align.losses.kl import kl_k1
from lit_align.online.generation import sample_completions
from lit_align.modeling import load_causal_lm, load_tokenizer
from lit_align.rewards import HFClassifierReward, LexiconSentimentReward

EVAL_SPLIT = "test"


def eval_prompts(num_prompts: int, seed: int = 0) -> list[str]:
    return [row["prompt"] for row in embedded_rows("embedded:prompts", EVAL_SPLIT, num_prompts, seed)]


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Rank correlation (ties get average ranks); nan when either side is constant."""
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(spearmanr(a, b).statistic)


class Evaluator:
    """Gold, proxies and KL of a policy's samples on ``num_prompts`` held-out prompts."""

    def __init__(self, sft: str, proxies: dict[str, str], num_prompts: int, samples_per_prompt: int, max_new_tokens: int = 24, seed: int = 1234) -> None:
        self.tokenizer = load_tokenizer(sft)
        self.reference = load_causal_lm(sft, self.tokenizer).eval().requires_grad_(False)
        self.gold = LexiconSentimentReward()
        self.proxies = {name: HFClassifierReward(path, device="cpu") for name, path in proxies.items()}
        self.prompts = eval_prompts(num_prompts)
        encoder = PromptCompletionEncoder(self.tokenizer, 48, 16, "auto")
        self.prompt_ids = [encoder.encode_prompt(p) for p in self.prompts]
        self.samples_per_prompt, self.max_new_tokens, self.seed = samples_per_prompt, max_new_tokens, seed

    def sample(self, policy, num_samples: int) -> tuple[list[str], list[list[int]], list[list[int]], list[str]]:
        """(prompt per sample, prompt ids per sample, completion ids, completion texts), prompt-major."""
        samples = sample_completions(policy, self.tokenizer, self.prompt_ids, num_samples, self.max_new_tokens, batch_size=256, seed=self.seed)
        prompts = [p for p in self.prompts for _ in range(num_samples)]
        prompt_ids = [ids for ids in self.prompt_ids for _ in range(num_samples)]
        completions = [c for per_prompt in samples for c in per_prompt]
        texts = [self.tokenizer.decode(c, skip_special_tokens=True).strip() for c in completions]
        return prompts, prompt_ids, completions, texts

    def scores(self, prompts: list[str], texts: list[str]) -> dict[str, np.ndarray]:
        """'gold' and one entry per proxy: the score of every sample."""
        out = {"gold": self.gold(prompts, texts).numpy().astype(np.float64)}
        for name, proxy in self.proxies.items():
            out[name] = proxy(prompts, texts).numpy().astype(np.float64)
        return out

    @torch.no_grad()
    def measure(self, policy) -> dict[str, float]:
        was_training = policy.training
        policy.eval()
        try:
            prompts, prompt_ids, completions, texts = self.sample(policy, self.samples_per_prompt)
            pad = self.tokenizer.pad_token_id
            log_ratio = kl_k1(sequence_logps_of(policy, prompt_ids, completions, pad), sequence_logps_of(self.reference, prompt_ids, completions, pad))
        finally:
            policy.train(was_training)
        scores = self.scores(prompts, texts)
        point = {"kl": float(log_ratio.mean()), "length": float(np.mean([len(c) for c in completions])), "gold": float(scores["gold"].mean())}
        for name in self.proxies:
            point[f"proxy/{name}"] = float(scores[name].mean())
            point[f"spearman/{name}"] = spearman(scores[name], scores["gold"])
        return point


class StudyEvaluation(Callback):
    """Measure the policy (``Evaluator``) before training and every ``every`` optimiser steps; write
    ``[{step, kl, gold, proxy/<name>, spearman/<name>, length}, ...]`` to ``path`` when training ends.

    Args:
        path: JSON file of the points.
        sft: The SFT start (KL reference, tokenizer).
        proxies: Name -> exported reward model folder, each scored on every sample.
        every: Steps between measurements.
        num_prompts / samples_per_prompt / seed: the held-out sample drawn at each measurement.
    """

    def __init__(self, path: str, sft: str, proxies: dict[str, str], every: int, num_prompts: int = 64, samples_per_prompt: int = 4, seed: int = 1234) -> None:
        self.path, self.every = path, every
        self.evaluator = Evaluator(sft, proxies, num_prompts, samples_per_prompt, seed=seed)
        self.points: list[dict] = []

    def _measure(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.points and self.points[-1]["step"] == trainer.global_step:
            return
        self.points.append({"step": trainer.global_step, **self.evaluator.measure(pl_module.policy.policy)})

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._measure(trainer, pl_module)

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, *args) -> None:
        if trainer.global_step % self.every == 0:
            self._measure(trainer, pl_module)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._measure(trainer, pl_module)
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        with open(self.path, "w") as f:
            json.dump(self.points, f, indent=1)
