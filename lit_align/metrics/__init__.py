"""torchmetrics for alignment: exact across batches, gradient accumulation and DDP (sum/count states)."""

from lit_align.metrics.kto import KTOMetrics
from lit_align.metrics.preference import PreferenceMetrics
from lit_align.metrics.reward_model import GoldRankCorrelation, RewardModelMetrics

__all__ = ["KTOMetrics", "PreferenceMetrics"]
__all__ += ["RewardModelMetrics", "GoldRankCorrelation"]
