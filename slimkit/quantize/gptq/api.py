"""``quantize: {method: gptq}`` handler: block-by-block Hessians, GPTQ per Linear, packed layers."""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from slimkit.core.context import RunContext
from slimkit.core.registry import register
from slimkit.quantize.gptq.config import GPTQConfig
from slimkit.quantize.gptq.core import HessianAccumulator, gptq_quantize
from slimkit.quantize.weight_only.apply import finish_notes, install, quantize_heads, select_linears
from slimkit.quantize.weight_only.layer import WeightOnlyLinear
from slimkit.quantize.weight_only.sequential import StatsHook, block_layers, run_blocks

__all__ = ["quantize_gptq"]


@register("quantize", "gptq", GPTQConfig, needs=("calib",))
def quantize_gptq(model: nn.Module, cfg: GPTQConfig, ctx: RunContext) -> nn.Module:
    """GPTQ every selected Linear, one decoder block at a time (inputs from the already-quantized prefix)."""
    calib = ctx.require("calib", "quantize:gptq")
    chosen = dict(select_linears(model, cfg, ctx, "quantize"))
    done: list[str] = []

    def visit(block_name: str, block: nn.Module, replay: Callable[[], None]) -> None:
        local = block_layers(block_name, block, chosen)
        if not local:
            return
        hess = {n: HessianAccumulator(m.in_features) for n, m in local.items()}
        with StatsHook(local, lambda n, x: hess[n].add(x)):
            replay()
        for name, linear in local.items():
            codes = gptq_quantize(linear.weight, hess[name].hessian(), cfg.bits, cfg.group_size, cfg.symmetric,
                                  cfg.damp, cfg.act_order, cfg.block_size, cfg.clip_search)
            with torch.no_grad():
                layer = WeightOnlyLinear.from_weight(linear.weight, linear.bias, cfg.bits, cfg.group_size,
                                                     cfg.symmetric, cfg.runtime, codes=codes)
            install(model, name, layer)
            done.append(name)
            del hess[name]

    run_blocks(model, calib, visit, ctx.progress)
    for name in sorted(set(chosen) - set(done)):
        ctx.skip(name, "Linear outside the calibrated blocks was never reached by calibration data")
    quantize_heads(model, cfg, ctx)
    finish_notes(model, ctx, len(done))
    return model
