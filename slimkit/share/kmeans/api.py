"""``share_weights: {method: kmeans}`` handler: cluster each selected Linear, swap in ClusteredLinear."""
from __future__ import annotations

import torch
from torch import nn

from slimkit.core.context import RunContext
from slimkit.core.provenance import record_edit
from slimkit.core.registry import register
from slimkit.core.select import select_modules, tied_weight_names
from slimkit.io.edits import replace_module
from slimkit.share.kmeans.config import KMeansShareConfig
from slimkit.share.kmeans.core import ClusteredLinear

__all__ = ["share_kmeans"]


@register("share_weights", "kmeans", KMeansShareConfig, default=True)
def share_kmeans(model: nn.Module, cfg: KMeansShareConfig, ctx: RunContext) -> nn.Module:
    """Replace every selected ``nn.Linear`` by a :class:`ClusteredLinear` with ``clusters`` values."""
    tied = tied_weight_names(model)
    layers = select_modules(model, (nn.Linear,), targets=cfg.targets, ignore=cfg.ignore, field="share_weights")
    sqnr: list[float] = []
    for name, linear in ctx.progress(layers, "k-means weight sharing"):
        if name in tied:
            ctx.skip(name, "weight is tied to another module; clustering it would untie the pair")
            continue
        layer = ClusteredLinear.from_linear(linear, cfg.clusters, cfg.iterations, cfg.init, cfg.cache_weight)
        with torch.no_grad():
            err = (layer.weight - linear.weight).double().pow(2).sum()
            sqnr.append(float(10 * torch.log10(linear.weight.double().pow(2).sum() / err.clamp_min(1e-30))))
        replace_module(model, name, layer)
        record_edit(model, {"op": "replace_module", "path": name, "kind": "clustered_linear", "spec": layer.spec()})
    ctx.note("clustered_layers", len(sqnr))
    ctx.note("index_bits", ClusteredLinear(1, 1, cfg.clusters).bits)
    if sqnr:
        ctx.note("min_weight_sqnr_db", round(min(sqnr), 2))
    return model
