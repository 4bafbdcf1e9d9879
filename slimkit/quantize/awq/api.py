"""``quantize: {method: awq}`` handler: block-by-block activation stats, scale search, packed layers."""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from slimkit.core.context import RunContext
from slimkit.core.registry import register
from slimkit.quantize.awq.config import AWQConfig
from slimkit.quantize.awq.core import ActivationStats, awq_search
from slimkit.quantize.weight_only.apply import finish_notes, install, quantize_heads, select_linears
from slimkit.quantize.weight_only.layer import WeightOnlyLinear
from slimkit.quantize.weight_only.sequential import StatsHook, block_layers, run_blocks

__all__ = ["quantize_awq"]


@register("quantize", "awq", AWQConfig, needs=("calib",))
def quantize_awq(model: nn.Module, cfg: AWQConfig, ctx: RunContext) -> nn.Module:
    """Search AWQ scales for every selected Linear, one decoder block at a time."""
    calib = ctx.require("calib", "quantize:awq")
    chosen = dict(select_linears(model, cfg, ctx, "quantize"))
    done: list[str] = []
    alphas: list[float] = []
    per_batch = max(1, cfg.n_tokens // len(calib))

    def visit(block_name: str, block: nn.Module, replay: Callable[[], None]) -> None:
        local = block_layers(block_name, block, chosen)
        if not local:
            return
        stats = {n: ActivationStats(m.in_features, per_batch) for n, m in local.items()}
        with StatsHook(local, lambda n, x: stats[n].add(x)):
            replay()
        for name, linear in local.items():
            st = stats.pop(name)
            st.keep = cfg.n_tokens
            inv, codes, alpha = awq_search(linear.weight, st.sample(), st.mean_abs(), cfg.bits, cfg.group_size,
                                           cfg.symmetric, cfg.grid, cfg.clip_search)
            with torch.no_grad():
                layer = WeightOnlyLinear.from_weight(linear.weight, linear.bias, cfg.bits, cfg.group_size,
                                                     cfg.symmetric, cfg.runtime, input_scale=inv, codes=codes)
            install(model, name, layer)
            done.append(name)
            alphas.append(alpha)

    run_blocks(model, calib, visit, ctx.progress)
    for name in sorted(set(chosen) - set(done)):
        ctx.skip(name, "Linear outside the calibrated blocks was never reached by calibration data")
    quantize_heads(model, cfg, ctx)
    ctx.note("mean_alpha", round(sum(alphas) / max(len(alphas), 1), 3))
    finish_notes(model, ctx, len(done))
    return model
