"""One LightningModule per algorithm, all on ``AlignmentModule``."""

from lit_align.algorithms.base import AlignmentModule
from lit_align.algorithms.bond import BOND, JBOND, BestOfNDistillation
from lit_align.algorithms.dpo import DPO, ConservativeDPO
from lit_align.algorithms.ipo import IPO
from lit_align.algorithms.kto import KTO
from lit_align.algorithms.orpo import ORPO
from lit_align.algorithms.pairwise import PairwiseAlignmentModule
from lit_align.algorithms.sft import SFT
from lit_align.algorithms.online_dpo import OnlineDPO, OnlinePairs
from lit_align.algorithms.reward_model import RewardModel

__all__ = ["AlignmentModule", "PairwiseAlignmentModule", "SFT", "DPO", "ConservativeDPO", "IPO", "KTO", "ORPO", "BestOfNDistillation", "BOND", "JBOND"]
__all__ += ["RewardModel", "OnlineDPO", "OnlinePairs"]
