"""Lightning callbacks shared by every algorithm."""

from lit_align.callbacks.bond_eval import BestOfNEvaluation
from lit_align.callbacks.checkpoint import LoggedMetricCheckpoint
from lit_align.callbacks.export import ExportPretrained
from lit_align.callbacks.hparams import HParamsSummary
from lit_align.callbacks.nonfinite import NonFiniteError, NonFiniteGuard
from lit_align.callbacks.padding import PaddingStats
from lit_align.callbacks.preemption import Preemption
from lit_align.callbacks.sampled_eval import SampledEvaluation
from lit_align.callbacks.summary import ModelSummary

__all__ = ["ExportPretrained", "HParamsSummary", "LoggedMetricCheckpoint", "NonFiniteError", "NonFiniteGuard", "Preemption", "PaddingStats", "SampledEvaluation", "BestOfNEvaluation", "ModelSummary"]
