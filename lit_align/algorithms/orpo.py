"""ORPO (arXiv 2403.07691): SFT plus an odds-ratio preference term, with no reference model."""

from __future__ import annotations

from typing import Any, Literal

import torch

from lit_align.algorithms.pairwise import PairLogps, PairwiseAlignmentModule, PairwiseOutput
from lit_align.data.batches import PairwiseBatch
from lit_align.errors import ConfigError, check_range
from lit_align.losses import orpo_loss
from lit_align.ops import SequenceLogps

NLLTokens = Literal["completion", "prompt_and_completion"]


class ORPO(PairwiseAlignmentModule):
    """Odds Ratio Preference Optimization: NLL on the chosen completion + lambda * L_OR.

    Reference-free: no reference model is built or held in memory (``reference='none'``), so
    it costs the memory of the policy alone. Logs ``nll_loss``, ``log_odds_ratio``
    (mean log sigma(log odds ratio), i.e. -L_OR), ``log_odds_chosen`` (mean log odds ratio) and,
    as TRL does, ``rewards/chosen|rejected`` = lambda * mean token log-prob: with no reference
    there is no log-ratio, so unlike the other pairwise methods these are not beta * rho(y).

    Args:
        odds_ratio_weight: lambda >= 0, the weight of the odds-ratio term (TRL calls it ``beta``);
            0.1 in the paper. 0 leaves plain SFT on the chosen completions.
        nll_tokens: Tokens of the NLL term (token-level over the batch either way):
            ``prompt_and_completion`` (default) the whole chosen row, only padding masked, as the
            authors' code and TRL compute it (costs one more forward over the chosen rows);
            ``completion`` the chosen completion only, the paper's L_SFT as written (the NLL of
            the response given the prompt), and the default before issue 23.
        **kwargs: See ``AlignmentModule``.
    """

    default_reference = "none"
    supported_references = ("none",)
    unsupported_reference_reason = "ORPO is reference-free (no reference model is built or held)"

    def __init__(self, odds_ratio_weight: float = 0.1, nll_tokens: NLLTokens = "prompt_and_completion", **kwargs: Any) -> None:
        check_range(self, "odds_ratio_weight", odds_ratio_weight, 0.0)
        if nll_tokens not in ("completion", "prompt_and_completion"):
            raise ConfigError(f"ORPO: nll_tokens must be 'completion' (the paper) or 'prompt_and_completion' (the authors' code, TRL), got {nll_tokens!r}")
        super().__init__(**kwargs)
        self.odds_ratio_weight = odds_ratio_weight
        self.nll_tokens = nll_tokens
        self._chosen_prompt: SequenceLogps | None = None

    def pair_logps(self, batch: PairwiseBatch) -> PairLogps:
        logps = super().pair_logps(batch)
        if self.nll_tokens == "prompt_and_completion":
            # Prompt tokens of the chosen rows (not padding; the first token has no prediction), kept
            # for pair_loss of this same step: the pair_loss hook receives only PairLogps.
            n = batch.num_pairs
            prompt_mask = batch.attention_mask[:n].bool() & ~batch.loss_mask[:n].bool()
            self._chosen_prompt = self.policy.policy_logps(batch.input_ids[:n], batch.attention_mask[:n], prompt_mask.to(batch.loss_mask.dtype))
        return logps

    def pair_loss(self, logps: PairLogps) -> tuple[PairwiseOutput, dict[str, torch.Tensor]]:
        chosen_prompt, self._chosen_prompt = self._chosen_prompt, None
        out = orpo_loss(logps.policy_chosen, logps.policy_rejected, self.odds_ratio_weight, chosen_prompt)
        logs = {"nll_loss": out.nll_losses.mean(), "log_odds_ratio": -out.odds_ratio_losses.mean(), "log_odds_chosen": out.log_odds.mean()}
        return PairwiseOutput(out.losses, out.chosen_rewards, out.rejected_rewards), {name: value.detach() for name, value in logs.items()}
