"""Per-layer k-means weight clustering (Deep Compression) stored as codebook + packed indices."""
from slimkit.share.kmeans.config import KMeansShareConfig
from slimkit.share.kmeans.core import ClusteredLinear, index_bits, kmeans_1d, pack_indices, unpack_indices

__all__ = ["KMeansShareConfig", "ClusteredLinear", "index_bits", "kmeans_1d", "pack_indices", "unpack_indices"]
