"""``share_weights: {method: cross_layer}`` handler: group consecutive blocks, tie, record."""
from __future__ import annotations

from torch import nn

from slimkit.core.context import RunContext
from slimkit.core.errors import ConfigError
from slimkit.core.provenance import record_edit
from slimkit.core.registry import register
from slimkit.share.cross_layer.config import CrossLayerShareConfig
from slimkit.share.cross_layer.core import check_same_shape, tie_blocks
from slimkit.surgery.blocks import find_blocks

__all__ = ["share_cross_layer"]


@register("share_weights", "cross_layer", CrossLayerShareConfig)
def share_cross_layer(model: nn.Module, cfg: CrossLayerShareConfig, ctx: RunContext) -> nn.Module:
    """Tie the parameters of each run of ``group_size`` consecutive same-shape blocks."""
    blocks = find_blocks(model, cfg.container)
    n = len(blocks)
    if cfg.group_size > n:
        raise ConfigError(f"share_weights.group_size = {cfg.group_size} exceeds the {n} blocks of {blocks.path}")
    groups = [list(range(s, min(s + cfg.group_size, n))) for s in range(0, n, cfg.group_size)]
    groups = [g for g in groups if len(g) > 1]
    for g in groups:
        for i in g[1:]:
            check_same_shape(blocks.container[g[0]], blocks.container[i],
                             (f"{blocks.path}.{g[0]}", f"{blocks.path}.{i}"))
    for g in groups:
        tie_blocks([blocks.container[i] for i in g], cfg.mode)
    record_edit(model, {"op": "tie_blocks", "container": blocks.path, "groups": groups})
    ctx.note("groups", groups)
    return model
