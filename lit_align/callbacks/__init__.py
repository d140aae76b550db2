"""Lightning callbacks shared by every algorithm."""

from lit_align.callbacks.export import ExportPretrained
from lit_align.callbacks.sampled_eval import SampledEvaluation

__all__ = ["ExportPretrained", "SampledEvaluation"]
