"""``low_rank: {method: svd}`` handler: per layer SVD, rank choice, swap in LowRankLinear, record."""
from __future__ import annotations

import torch
from torch import nn

from slimkit.core.context import RunContext
from slimkit.core.errors import ConfigError
from slimkit.core.heads import drop_protected, names_explicitly
from slimkit.core.layer_notes import layer_summary
from slimkit.core.registry import register
from slimkit.core.select import select_modules, tied_weight_names
from slimkit.core.swap import custom_forward, install_layer
from slimkit.lowrank.svd.config import LowRankSVDConfig
from slimkit.lowrank.svd.core import LowRankLinear, choose_rank

__all__ = ["low_rank_svd"]


def _layers(model: nn.Module, cfg: LowRankSVDConfig, ctx: RunContext) -> list[tuple[str, nn.Linear]]:
    """Selected Linears minus the output head / embeddings (unless named) and minus tied weights.

    Factorizing a Linear whose weight is shared (a tied ``lm_head``) would untie it and store the
    matrix twice: such a layer is skipped and reported, and naming it in ``targets`` is an error.
    """
    layers = select_modules(model, (nn.Linear,), targets=cfg.targets, ignore=cfg.ignore, field="low_rank")
    tied = tied_weight_names(model)
    named_tied = [n for n, _ in layers if n in tied and names_explicitly(cfg.targets, n)]
    if named_tied:
        raise ConfigError(f"low_rank.targets names {named_tied}, whose weight is tied to another module; "
                          "factorizing it would untie the weight (store it twice), so low_rank never does")
    kept = []
    for name, layer in drop_protected(model, layers, cfg.targets, ctx):
        if name in tied:
            ctx.skip(name, "weight tied to another module: factorizing would untie it")
            continue
        why = custom_forward(layer)
        if why is not None:
            ctx.skip(name, why)
            continue
        kept.append((name, layer))
    return kept


@register("low_rank", "svd", LowRankSVDConfig, default=True)
def low_rank_svd(model: nn.Module, cfg: LowRankSVDConfig, ctx: RunContext) -> nn.Module:
    """Factorize every selected Linear whose chosen rank saves parameters."""
    layers = _layers(model, cfg, ctx)
    before = after = done = 0
    errors: dict[str, float] = {}
    ranks: dict[str, str | float] = {}
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
        install_layer(model, name, layer)
        before += in_f * out_f
        after += r * (in_f + out_f)
        errors[name] = round(err, 5)
        ranks[name] = r
        done += 1
    ctx.note("factorized_layers", done)
    ctx.note("weight_params_ratio", round(after / before, 4) if before else 1.0)
    ctx.note("max_relative_error", max(errors.values(), default=0.0))
    ctx.note("layer_ranks", layer_summary(ranks))
    return model
