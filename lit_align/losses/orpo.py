"""Odds Ratio Preference Optimization (Hong et al. 2024, arXiv 2403.07691): reference-free."""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from lit_align.ops import SequenceLogps, log1mexp


class ORPOOutput(NamedTuple):
    """Unreduced per-pair outputs; ``losses.mean()`` is the ORPO objective of the batch.

    ``nll_losses`` is each pair's share of the batch's token-level NLL (they average to it),
    ``odds_ratio_losses`` is L_OR = -log sigma(log_odds), ``log_odds`` is
    log odds(y_w) - log odds(y_l), and the rewards are beta * mean token log-prob (detached), as TRL logs them.
    """

    losses: torch.Tensor
    chosen_rewards: torch.Tensor
    rejected_rewards: torch.Tensor
    nll_losses: torch.Tensor
    odds_ratio_losses: torch.Tensor
    log_odds: torch.Tensor


def log_odds(mean_logps: torch.Tensor) -> torch.Tensor:
    """log odds(y) = log P - log(1 - P) with log P = mean token log-prob, in fp32.

    The naive log(1 - exp(lp)) is -inf once exp(lp) rounds to 1 (lp > -6e-8 in fp32), which turns
    the difference of two log-odds into inf - inf = NaN; ``log1mexp`` stays finite there.
    """
    mean_logps = mean_logps.to(torch.float32)
    return mean_logps - log1mexp(mean_logps)


def orpo_loss(policy_chosen: SequenceLogps, policy_rejected: SequenceLogps, odds_ratio_weight: float = 0.1, chosen_prompt: SequenceLogps | None = None) -> ORPOOutput:
    """ORPO, Eq. 6-7 of arXiv 2403.07691: L = L_SFT + lambda * L_OR with

        L_OR = -log sigma(log odds(y_w|x) - log odds(y_l|x)),   odds(y|x) = P(y|x) / (1 - P(y|x)),

    where P is the length-normalised likelihood exp(mean token log-prob) of the completion and
    L_SFT the NLL. The NLL is token-level over the batch (sum of token NLLs / number of tokens).
    Which tokens count:

    * ``chosen_prompt`` None: the chosen COMPLETION tokens only, the paper's definition
      (L_SFT is the causal-LM NLL of the chosen response y_w given x). With ``odds_ratio_weight``
      = 0 the objective is then exactly our SFT loss on the chosen side.
    * with ``chosen_prompt`` (log-probs of the chosen rows' prompt tokens): prompt + completion
      tokens, as the authors' released code and TRL's ORPOTrainer compute it (their NLL is the
      plain causal-LM loss over the whole chosen sequence); the ``ORPO`` algorithm's default.

    No reference model appears anywhere.
    """
    num_pairs = policy_chosen.sum.shape[0]
    nll_sum, nll_count = policy_chosen.sum, policy_chosen.count
    if chosen_prompt is not None:
        nll_sum, nll_count = nll_sum + chosen_prompt.sum, nll_count + chosen_prompt.count
    # Pair i's share of the token-level NLL: mean over pairs of this = sum NLL / total tokens.
    nll_losses = -nll_sum * num_pairs / nll_count.sum().clamp(min=1)
    log_odds_ratio = log_odds(policy_chosen.mean) - log_odds(policy_rejected.mean)
    odds_ratio_losses = -F.logsigmoid(log_odds_ratio)
    return ORPOOutput(
        losses=nll_losses + odds_ratio_weight * odds_ratio_losses,
        chosen_rewards=odds_ratio_weight * policy_chosen.mean.detach(),
        rejected_rewards=odds_ratio_weight * policy_rejected.mean.detach(),
        nll_losses=nll_losses,
        odds_ratio_losses=odds_ratio_losses,
        log_odds=log_odds_ratio.detach(),
    )
