"""Merge layers: BatchNorm folding, linear-linear folding, LaCo-style merging of similar blocks."""
from slimkit.surgery.merge_layers.config import MergeLayersConfig
from slimkit.surgery.merge_layers.core import adjacent_pairs, fold_bn, fold_linear, rdsc_merge

__all__ = ["MergeLayersConfig", "adjacent_pairs", "fold_bn", "fold_linear", "rdsc_merge"]
