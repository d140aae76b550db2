"""ORPO (arXiv 2403.07691): SFT plus an odds-ratio preference term, with no reference model."""

from __future__ import annotations

from typing import Any

import torch

from lit_align.algorithms.pairwise import PairLogps, PairwiseAlignmentModule
from lit_align.losses import ORPOOutput, orpo_loss


class ORPO(PairwiseAlignmentModule):
    """Odds Ratio Preference Optimization: NLL on the chosen completion + lambda * L_OR.

    Reference-free: no reference model is built or held in memory (``reference='none'``), so
    it costs the memory of the policy alone. Logs ``nll_loss``, ``log_odds_ratio``
    (mean log sigma(log odds ratio), i.e. -L_OR), ``log_odds_chosen`` (mean log odds ratio) and,
    as TRL does, ``rewards/chosen|rejected`` = lambda * mean token log-prob.

    Args:
        odds_ratio_weight: lambda, the weight of the odds-ratio term (TRL calls it ``beta``);
            0.1 in the paper. 0 leaves plain SFT on the chosen completions.
        **kwargs: See ``AlignmentModule``.
    """

    default_reference = "none"

    def __init__(self, odds_ratio_weight: float = 0.1, **kwargs: Any) -> None:
        if kwargs.get("reference") not in (None, "none"):
            raise ValueError("ORPO is reference-free; leave `reference` unset (it is 'none')")
        super().__init__(**kwargs)
        self.odds_ratio_weight = odds_ratio_weight

    def pair_loss(self, logps: PairLogps) -> tuple[ORPOOutput, dict[str, torch.Tensor]]:
        out = orpo_loss(logps.policy_chosen, logps.policy_rejected, self.odds_ratio_weight)
        logs = {"nll_loss": out.nll_losses.mean(), "log_odds_ratio": -out.odds_ratio_losses.mean(), "log_odds_chosen": out.log_odds.mean()}
        return out, {name: value.detach() for name, value in logs.items()}
