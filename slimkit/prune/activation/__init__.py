"""Activation (output-based) pruning: units ranked by their activations on calibration data."""
from slimkit.prune.activation.config import ActivationPruneConfig

__all__ = ["ActivationPruneConfig"]
