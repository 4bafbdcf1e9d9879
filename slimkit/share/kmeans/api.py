"""``share_weights: {method: kmeans}`` handler: cluster each selected Linear, swap in ClusteredLinear."""
from __future__ import annotations

import torch
from torch import nn

from slimkit.core.context import RunContext
from slimkit.core.registry import register
from slimkit.core.swap import swap_layers, swappable_layers
from slimkit.share.kmeans.config import KMeansShareConfig
from slimkit.share.kmeans.core import ClusteredLinear

__all__ = ["share_kmeans"]


def _sqnr_db(original: torch.Tensor, approx: torch.Tensor) -> float:
    """Weight signal-to-quantization-noise ratio in dB."""
    with torch.no_grad():
        err = (approx - original).double().pow(2).sum()
        return float(10 * torch.log10(original.double().pow(2).sum() / err.clamp_min(1e-30)))


@register("share_weights", "kmeans", KMeansShareConfig, default=True)
def share_kmeans(model: nn.Module, cfg: KMeansShareConfig, ctx: RunContext) -> nn.Module:
    """Replace every selected ``nn.Linear`` by a :class:`ClusteredLinear` with ``clusters`` values."""
    layers = swappable_layers(model, (nn.Linear,), ctx, targets=cfg.targets, ignore=cfg.ignore, field="share_weights",
                              tied_reason="weight is tied to another module; clustering it would untie the pair")
    done = swap_layers(model, ctx.progress(layers.items(), "k-means weight sharing", total=len(layers)),
                       lambda _, linear: ClusteredLinear.from_linear(linear, cfg.clusters, cfg.iterations, cfg.init,
                                                                     cfg.cache_weight))
    sqnr = [_sqnr_db(layers[name].weight, layer.weight) for name, layer in done.items()]
    ctx.note("clustered_layers", len(sqnr))
    ctx.note("index_bits", ClusteredLinear(1, 1, cfg.clusters).bits)
    if sqnr:
        ctx.note("min_weight_sqnr_db", round(min(sqnr), 2))
    return model
