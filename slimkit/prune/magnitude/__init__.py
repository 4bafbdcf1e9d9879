"""Unstructured magnitude pruning (layer-wise or global)."""
from slimkit.prune.magnitude.config import MagnitudePruneConfig

__all__ = ["MagnitudePruneConfig"]
