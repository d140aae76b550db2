"""Reward functions r(prompt, completion) -> float tensor, pluggable by ``class_path``."""

from lit_align.rewards.base import RewardFunction
from lit_align.rewards.hf_classifier import HFClassifierReward
from lit_align.rewards.sentiment import LexiconSentimentReward

__all__ = ["RewardFunction", "LexiconSentimentReward", "HFClassifierReward"]
