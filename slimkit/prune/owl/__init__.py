"""OWL: outlier-weighted layer-wise sparsity (Yin et al. 2024) for wanda and sparsegpt."""
from slimkit.prune.owl.api import OwlAllocation, owl_allocation, owl_step
from slimkit.prune.owl.core import outlier_ratio, owl_block_sparsities

__all__ = ["OwlAllocation", "owl_allocation", "owl_step", "outlier_ratio", "owl_block_sparsities"]
