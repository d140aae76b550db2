"""Bradley–Terry reward-model loss (the RLHF reward model of Ouyang et al. 2022, arXiv 2203.02155, Eq. 1)."""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F


class BradleyTerryOutput(NamedTuple):
    """Unreduced per-pair outputs. ``losses`` is the full per-pair loss (Bradley–Terry term, margin
    and centring included); ``centering_losses`` the centring part alone (zeros without it); the
    rewards are detached copies of r(x, y_w) and r(x, y_l) for metrics."""

    losses: torch.Tensor
    centering_losses: torch.Tensor
    chosen_rewards: torch.Tensor
    rejected_rewards: torch.Tensor


def bradley_terry_loss(
    chosen_rewards: torch.Tensor,
    rejected_rewards: torch.Tensor,
    margin: torch.Tensor | float = 0.0,
    center_coefficient: float = 0.0,
) -> BradleyTerryOutput:
    """Negative log-likelihood of the preferences under the Bradley–Terry model, per pair:

        L = -log sigma(r(x, y_w) - r(x, y_l) - m) + c * (r(x, y_w) + r(x, y_l))^2

    * The first term with m = 0 is the reward-model loss of InstructGPT (Ouyang et al. 2022,
      arXiv 2203.02155, Eq. 1). At init, equal rewards give sigma(0) = 1/2 and L = log 2.
    * ``margin`` m (a number, or one value per pair) is Llama 2's margin (Touvron et al. 2023,
      arXiv 2307.09288, Eq. 2): the chosen reward must beat the rejected one by at least m before
      the loss flattens; Llama 2 makes m larger for pairs rated as clearly different.
    * ``center_coefficient`` c adds the auxiliary loss of Eisenstein et al. 2023 ("Helping or
      herding?", arXiv 2312.09244, Sec. 3), which TRL calls ``center_rewards_coefficient`` (they
      suggest 0.01): Bradley–Terry only sees reward *differences*, so the mean reward drifts
      freely; the penalty pins the rewards of each pair near zero mean, which keeps scores of
      different reward models (ensembles) and of different runs comparable.
    """
    if center_coefficient < 0:
        raise ValueError(f"center_coefficient must be >= 0, got {center_coefficient}")
    # logsigmoid keeps the loss finite when the margin is large and negative.
    bt = -F.logsigmoid(chosen_rewards - rejected_rewards - margin)
    centering = center_coefficient * (chosen_rewards + rejected_rewards) ** 2
    return BradleyTerryOutput(bt + centering, centering, chosen_rewards.detach(), rejected_rewards.detach())
