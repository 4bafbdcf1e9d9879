"""Structured pruning: channels, neurons, attention heads (GQA-aware) and the transformer hidden width, removed physically."""
from slimkit.prune.structured.config import StructuredPruneConfig

__all__ = ["StructuredPruneConfig"]
