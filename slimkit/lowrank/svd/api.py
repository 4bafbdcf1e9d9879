"""``low_rank: {method: svd}`` handler: per layer SVD, rank choice, swap in LowRankLinear, record."""
from __future__ import annotations

import torch
from torch import nn

from slimkit.core.context import RunContext
from slimkit.core.provenance import record_edit
from slimkit.core.registry import register
from slimkit.core.select import select_modules
from slimkit.io.edits import replace_module
from slimkit.lowrank.svd.config import LowRankSVDConfig
from slimkit.lowrank.svd.core import LowRankLinear, choose_rank

__all__ = ["low_rank_svd"]


@register("low_rank", "svd", LowRankSVDConfig, default=True)
def low_rank_svd(model: nn.Module, cfg: LowRankSVDConfig, ctx: RunContext) -> nn.Module:
    """Factorize every selected Linear whose chosen rank saves parameters."""
    layers = select_modules(model, (nn.Linear,), targets=cfg.targets, ignore=cfg.ignore, field="low_rank")
    before = after = done = 0
    errors: dict[str, float] = {}
    for name, linear in ctx.progress(layers, "low-rank SVD"):
        out_f, in_f = linear.weight.shape
        svd = torch.linalg.svd(linear.weight.detach().double(), full_matrices=False)  # once per layer
        s = svd[1]
        r = choose_rank(s, in_f, out_f, energy=cfg.energy, params_ratio=cfg.params_ratio, rank=cfg.rank,
                        multiple=cfg.rank_multiple)
        if r * (in_f + out_f) >= in_f * out_f:
            ctx.skip(name, f"rank {r} would not save parameters ({r}x({in_f}+{out_f}) >= {in_f}x{out_f})")
            continue
        layer, err = LowRankLinear.from_linear(linear, r, svd)
        replace_module(model, name, layer)
        record_edit(model, {"op": "replace_module", "path": name, "kind": "low_rank_linear", "spec": layer.spec()})
        before += in_f * out_f
        after += r * (in_f + out_f)
        errors[name] = round(err, 5)
        done += 1
    ctx.note("factorized_layers", done)
    ctx.note("weight_params_ratio", round(after / before, 4) if before else 1.0)
    ctx.note("max_relative_error", max(errors.values(), default=0.0))
    return model
