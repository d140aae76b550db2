"""Pure loss functions: per-sequence log-probs in, unreduced tensors out. No Lightning, no config."""

from lit_align.losses.bond import BONDOutput, JBONDOutput, analytic_bon_kl, bon_log_ratio, bond_loss, expected_best_of_n, jbond_loss, jbond_reward, quantile_estimate
from lit_align.losses.dpo import DPOOutput, dpo_loss
from lit_align.losses.ipo import ipo_loss
from lit_align.losses.kl import KL_ESTIMATORS, kl_estimate, kl_k1, kl_k2, kl_k3
from lit_align.losses.kto import KTOOutput, check_weight_ratio, kto_loss, kto_reference_point
from lit_align.losses.orpo import ORPOOutput, log_odds, orpo_loss
from lit_align.losses.sft import sft_loss
from lit_align.losses.bradley_terry import BradleyTerryOutput, bradley_terry_loss

__all__ = ["DPOOutput", "dpo_loss", "ipo_loss", "sft_loss", "KTOOutput", "kto_loss", "kto_reference_point", "check_weight_ratio", "ORPOOutput", "orpo_loss", "log_odds", "BONDOutput", "JBONDOutput", "bond_loss", "jbond_loss", "jbond_reward", "quantile_estimate", "bon_log_ratio", "analytic_bon_kl", "expected_best_of_n"]
__all__ += ["BradleyTerryOutput", "bradley_terry_loss"]
__all__ += ["KL_ESTIMATORS", "kl_estimate", "kl_k1", "kl_k2", "kl_k3"]
