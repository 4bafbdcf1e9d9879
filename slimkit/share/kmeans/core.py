"""1-D k-means on weights, index packing, and the :class:`ClusteredLinear` layer kind.

1-D k-means is solved exactly per Lloyd step with a sort-free trick: with sorted centroids the
nearest one is found by ``bucketize`` against the midpoints, O(n log k), which handles the
millions of weights of a real layer in milliseconds (a general-purpose k-means library would
compute an n×k distance matrix).
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from slimkit.io.edits import register_module_kind

__all__ = ["kmeans_1d", "index_bits", "pack_indices", "unpack_indices", "ClusteredLinear"]


def kmeans_1d(values: torch.Tensor, k: int, iterations: int = 25, init: str = "linear") -> tuple[torch.Tensor, torch.Tensor]:
    """Cluster a 1-D tensor into ``k`` centroids; returns (sorted centroids [k], assignment [n] int64)."""
    v = values.detach().reshape(-1).double()
    if init == "linear":
        centroids = torch.linspace(float(v.min()), float(v.max()), k, dtype=torch.float64)
    else:
        sample = v if v.numel() <= 1_000_000 else v[torch.randperm(v.numel(), generator=torch.Generator().manual_seed(0))[:1_000_000]]
        centroids = torch.quantile(sample, torch.linspace(0, 1, k, dtype=torch.float64))
    assign = _assign(v, centroids)
    for _ in range(iterations):
        sums = torch.zeros(k, dtype=torch.float64).index_add_(0, assign, v)
        counts = torch.bincount(assign, minlength=k).double()
        updated = torch.where(counts > 0, sums / counts.clamp_min(1), centroids)  # empty cluster keeps its value
        centroids = torch.sort(updated).values
        new_assign = _assign(v, centroids)
        if torch.equal(new_assign, assign):
            break
        assign = new_assign
    return centroids, assign


def _assign(v: torch.Tensor, sorted_centroids: torch.Tensor) -> torch.Tensor:
    """Index of the nearest centroid for each value (centroids sorted ascending)."""
    mids = (sorted_centroids[1:] + sorted_centroids[:-1]) / 2
    return torch.bucketize(v, mids)


def index_bits(k: int) -> int:
    """Bits per stored index: the smallest of 1, 2, 4, 8 that can address ``k`` centroids."""
    for bits in (1, 2, 4, 8):
        if k <= 1 << bits:
            return bits
    raise ValueError(f"k = {k} needs more than 8 bits")


def pack_indices(idx: torch.Tensor, bits: int) -> torch.Tensor:
    """[out, in] ints < 2**bits -> uint8 [out, ceil(in * bits / 8)], little-end first in each byte."""
    per = 8 // bits
    out_f, in_f = idx.shape
    pad = (-in_f) % per
    x = F.pad(idx.to(torch.uint8), (0, pad)).reshape(out_f, -1, per)
    shifts = torch.arange(per, dtype=torch.uint8) * bits
    return (x << shifts).sum(dim=-1, dtype=torch.uint8)


def unpack_indices(packed: torch.Tensor, bits: int, in_features: int) -> torch.Tensor:
    """Inverse of :func:`pack_indices`: uint8 [out, bytes] -> int64 [out, in_features]."""
    per = 8 // bits
    shifts = torch.arange(per, dtype=torch.uint8) * bits
    mask = (1 << bits) - 1
    x = (packed.unsqueeze(-1) >> shifts) & mask  # [out, bytes, per]
    return x.reshape(packed.shape[0], -1)[:, :in_features].long()


@register_module_kind("clustered_linear")
class ClusteredLinear(nn.Module):
    """Linear layer whose weight is ``codebook[indices]``: k shared values and packed indices.

    Runtime: a dequantize path — the forward rebuilds the float weight from the codebook (an
    unpack + gather over [out, in]) and runs a float GEMM, so it is *slower* than ``nn.Linear``
    unless ``cache_weight`` keeps the rebuilt weight. The win is storage.
    """

    slimkit_runtime = "torch eager (codebook dequantize + float GEMM)"

    def __init__(self, in_features: int, out_features: int, clusters: int, bias: bool = True,
                 cache_weight: bool = False) -> None:
        super().__init__()
        self.in_features, self.out_features, self.clusters = in_features, out_features, clusters
        self.bits = index_bits(clusters)
        self.cache_weight = cache_weight
        self.codebook = nn.Parameter(torch.zeros(clusters))
        n_bytes = (in_features * self.bits + 7) // 8
        self.register_buffer("indices", torch.zeros(out_features, n_bytes, dtype=torch.uint8))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None
        self._cached: torch.Tensor | None = None

    @classmethod
    def from_linear(cls, linear: nn.Linear, clusters: int, iterations: int = 25, init: str = "linear",
                    cache_weight: bool = False) -> "ClusteredLinear":
        layer = cls(linear.in_features, linear.out_features, clusters, linear.bias is not None, cache_weight)
        centroids, assign = kmeans_1d(linear.weight, clusters, iterations, init)
        with torch.no_grad():
            layer.codebook.copy_(centroids.to(layer.codebook.dtype))
            layer.indices.copy_(pack_indices(assign.reshape(linear.weight.shape), layer.bits))
            if linear.bias is not None:
                layer.bias.copy_(linear.bias)
        return layer

    def weight_indices(self) -> torch.Tensor:
        """Cluster index of every weight, int64 [out, in]."""
        return unpack_indices(self.indices, self.bits, self.in_features)

    @property
    def weight(self) -> torch.Tensor:
        """The dequantized float weight [out, in] (differentiable w.r.t. the codebook)."""
        if self._cached is not None and not torch.is_grad_enabled():
            return self._cached
        w = self.codebook[self.weight_indices()]
        if self.cache_weight and not torch.is_grad_enabled():
            self._cached = w.detach()
        return w

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        self._cached = None
        super()._load_from_state_dict(*args, **kwargs)

    def slimkit_weights(self) -> dict[str, torch.Tensor]:
        out = {"codebook": self.codebook, "indices": self.indices}
        if self.bias is not None:
            out["bias"] = self.bias
        return out

    def slimkit_logical_weights(self) -> dict[str, torch.Tensor]:
        """The weight as [out, in] values (indices are bit-packed on disk)."""
        out = {"weight": self.codebook.detach()[self.weight_indices()]}
        if self.bias is not None:
            out["bias"] = self.bias
        return out

    def spec(self) -> dict[str, Any]:
        return {"in_features": self.in_features, "out_features": self.out_features, "clusters": self.clusters,
                "bias": self.bias is not None, "cache_weight": self.cache_weight}

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> "ClusteredLinear":
        return cls(int(spec["in_features"]), int(spec["out_features"]), int(spec["clusters"]), bool(spec["bias"]),
                   bool(spec.get("cache_weight", False)))
