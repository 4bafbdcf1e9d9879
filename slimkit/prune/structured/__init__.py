"""Structured pruning: whole channels / neurons removed physically, dependency-aware (Torch-Pruning)."""
from slimkit.prune.structured.config import StructuredPruneConfig

__all__ = ["StructuredPruneConfig"]
