"""SparseGPT pruning (Frantar & Alistarh 2023): Hessian-based masks with weight reconstruction."""
from slimkit.prune.sparsegpt.config import SparseGPTPruneConfig

__all__ = ["SparseGPTPruneConfig"]
