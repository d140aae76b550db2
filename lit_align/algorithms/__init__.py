"""One LightningModule per algorithm, all on ``AlignmentModule``.

A plug-in algorithm needs only what this module exports: the bases (``AlignmentModule``,
``PairwiseAlignmentModule``), what ``pair_loss`` receives and returns (``PairLogps`` of
``SequenceLogps``, ``PairwiseOutput``), the batch types, and the reference mode names.
"""

from lit_align.algorithms.base import AlignmentModule
from lit_align.algorithms.bond import BOND, JBOND, BestOfNDistillation
from lit_align.algorithms.dpo import DPO, ConservativeDPO
from lit_align.algorithms.ipo import IPO
from lit_align.algorithms.kto import KTO
from lit_align.algorithms.orpo import ORPO
from lit_align.algorithms.pairwise import PairLogps, PairwiseAlignmentModule, PairwiseOutput
from lit_align.algorithms.sft import SFT
from lit_align.algorithms.online_dpo import OnlineDPO, OnlinePairs
from lit_align.algorithms.reward_model import RewardModel
from lit_align.algorithms.policy_gradient import PolicyGradient
from lit_align.algorithms.rloo import RLOO
from lit_align.algorithms.grpo import GRPO
from lit_align.algorithms.ppo import PPO
from lit_align.data.batches import BestOfNBatch, PairwiseBatch, SequenceBatch, UnpairedBatch
from lit_align.ops import SequenceLogps
from lit_align.policy import REFERENCE_MODES

__all__ = ["AlignmentModule", "PairwiseAlignmentModule", "SFT", "DPO", "ConservativeDPO", "IPO", "KTO", "ORPO", "BestOfNDistillation", "BOND", "JBOND"]
__all__ += ["RewardModel", "OnlineDPO", "OnlinePairs", "PolicyGradient", "RLOO", "GRPO", "PPO"]
__all__ += ["PairLogps", "PairwiseOutput", "SequenceLogps", "SequenceBatch", "PairwiseBatch", "UnpairedBatch", "BestOfNBatch", "REFERENCE_MODES"]
