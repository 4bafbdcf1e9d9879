"""Gradual magnitude pruning with a cubic schedule during fine-tuning (Zhu & Gupta 2017)."""
from slimkit.prune.gradual.config import GradualPruneConfig

__all__ = ["GradualPruneConfig"]
