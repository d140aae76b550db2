"""One LightningModule per algorithm, all on ``AlignmentModule``.

A plug-in algorithm needs only what this module exports: the bases (``AlignmentModule``,
``PairwiseAlignmentModule``), what ``pair_loss`` receives and returns (``PairLogps`` of
``SequenceLogps``, ``PairwiseOutput``), the batch types, and the reference mode names; an online
one also the on-policy contract (``OnlineSampling``, ``Rollout``, ``token_logps``,
``PromptDataModule``, ``PromptBatch``, ``sample_seed``/``SeedLayout``, ``SamplingSettings``, the KL
estimators), re-exported from ``lit_align.online``.
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
from lit_align.data.batches import BestOfNBatch, PairwiseBatch, PromptBatch, SequenceBatch, UnpairedBatch
from lit_align.losses.kl import kl_estimate, kl_k1, kl_k2, kl_k3
from lit_align.online.generation import SamplingSettings
from lit_align.online.prompts import PromptDataModule
from lit_align.online.rollout import Rollout, token_logps
from lit_align.online.sampling import OnlineSampling
from lit_align.online.seeding import SeedLayout, sample_seed
from lit_align.online.estimators import ADVANTAGE_ESTIMATORS, POLICY_LOSSES, AdvantageInputs, Advantages, PolicyLoss, PolicyLossSettings, register_advantage_estimator, register_policy_loss
from lit_align.ops import SequenceLogps
from lit_align.policy import REFERENCE_MODES

__all__ = ["AlignmentModule", "PairwiseAlignmentModule", "SFT", "DPO", "ConservativeDPO", "IPO", "KTO", "ORPO", "BestOfNDistillation", "BOND", "JBOND"]
__all__ += ["RewardModel", "OnlineDPO", "OnlinePairs", "PolicyGradient", "RLOO", "GRPO", "PPO"]
__all__ += ["PairLogps", "PairwiseOutput", "SequenceLogps", "SequenceBatch", "PairwiseBatch", "UnpairedBatch", "BestOfNBatch", "REFERENCE_MODES"]
__all__ += ["OnlineSampling", "Rollout", "token_logps", "PromptDataModule", "PromptBatch", "SamplingSettings", "SeedLayout", "sample_seed", "kl_estimate", "kl_k1", "kl_k2", "kl_k3"]
__all__ += ["ADVANTAGE_ESTIMATORS", "POLICY_LOSSES", "AdvantageInputs", "Advantages", "PolicyLoss", "PolicyLossSettings", "register_advantage_estimator", "register_policy_loss"]
