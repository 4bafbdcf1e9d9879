"""``merge_layers`` handlers: bn_fold, linear_fold (exact) and similar (LaCo, calibrated)."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from slimkit.core.context import RunContext
from slimkit.core.errors import ConfigError
from slimkit.core.inputs import call_model, output_tensor
from slimkit.core.provenance import record_edit
from slimkit.core.registry import register
from slimkit.core.select import matching_names
from slimkit.core.swap import install_layer
from slimkit.surgery.blocks import drop_blocks, find_blocks
from slimkit.surgery.drop_layers.core import block_io_tensor
from slimkit.surgery.layers import SpecIdentity, SpecLinear, add_bias
from slimkit.surgery.merge_layers.config import MergeLayersConfig
from slimkit.surgery.merge_layers.core import (BN_TYPES, CONV_TYPES, PASSTHROUGH, adjacent_pairs, fold_bn,
                                               fold_linear, rdsc_merge)

__all__ = ["merge_bn_fold", "merge_linear_fold", "merge_similar"]


def _selected(model: nn.Module, pairs: list[tuple[str, str]], cfg: MergeLayersConfig) -> list[tuple[str, str]]:
    """Pairs whose producer is covered by ``targets`` (all when None) and not by ``ignore``."""
    wanted = matching_names(model, cfg.targets, "merge_layers.targets") if cfg.targets is not None else None
    dropped = matching_names(model, cfg.ignore, "merge_layers.ignore") if cfg.ignore else set()
    return [(a, b) for a, b in pairs if a not in dropped and (wanted is None or a in wanted)]


def _fallback(ctx: RunContext) -> Callable[[str], None]:
    """Records a pair-finding fallback (untraceable model) in the step's ``fallback`` note."""
    return lambda reason: ctx.note("fallback", reason)


def _identity(model: nn.Module, path: str) -> None:
    install_layer(model, path, SpecIdentity())


@register("merge_layers", "bn_fold", MergeLayersConfig, default=True)
def merge_bn_fold(model: nn.Module, cfg: MergeLayersConfig, ctx: RunContext) -> nn.Module:
    """Fold every eval-mode BatchNorm into the conv/linear that feeds it; the BN becomes Identity."""
    model.eval()
    pairs = _selected(model, adjacent_pairs(model, CONV_TYPES, BN_TYPES, on_fallback=_fallback(ctx)), cfg)
    for layer_name, bn_name in pairs:
        layer, bn = model.get_submodule(layer_name), model.get_submodule(bn_name)
        if bn.running_mean is None:
            ctx.skip(bn_name, "BatchNorm tracks no running statistics; its batch statistics cannot be folded")
            continue
        w, b = fold_bn(layer, bn)
        if layer.bias is None:
            add_bias(layer)
            record_edit(model, {"op": "add_bias", "path": layer_name})
        with torch.no_grad():
            layer.weight.copy_(w)
            layer.bias.copy_(b)
        _identity(model, bn_name)
    folded = {b for _, b in pairs}
    for name, m in model.named_modules():
        if isinstance(m, BN_TYPES) and name not in folded:
            ctx.skip(name, "no conv/linear feeds only this BatchNorm (or the model is not traceable there)")
    ctx.note("folded_batchnorms", len(pairs))
    return model


@register("merge_layers", "linear_fold", MergeLayersConfig)
def merge_linear_fold(model: nn.Module, cfg: MergeLayersConfig, ctx: RunContext) -> nn.Module:
    """Fuse consecutive Linear layers with no nonlinearity between into one Linear."""
    pairs = _selected(model, adjacent_pairs(model, (nn.Linear,), (nn.Linear,), PASSTHROUGH, _fallback(ctx)), cfg)
    done = 0
    used: set[str] = set()
    for a_name, b_name in pairs:
        if a_name in used or b_name in used:
            ctx.skip(b_name, "part of a chain already fused in this step; run linear_fold again to fuse further")
            continue
        a, b = model.get_submodule(a_name), model.get_submodule(b_name)
        fused_params = a.in_features * b.out_features
        if fused_params > a.weight.numel() + b.weight.numel() and not cfg.allow_growth:
            ctx.skip(a_name, f"fusing with {b_name} would grow the weights ({fused_params} > "
                             f"{a.weight.numel() + b.weight.numel()}); set allow_growth: true to fuse anyway")
            continue
        w, bias = fold_linear(a, b)
        fused = SpecLinear(a.in_features, b.out_features, bias=bias is not None).to(dtype=b.weight.dtype)
        with torch.no_grad():
            fused.weight.copy_(w)
            if bias is not None:
                fused.bias.copy_(bias)
        install_layer(model, a_name, fused)
        _identity(model, b_name)
        used |= {a_name, b_name}
        done += 1
    ctx.note("fused_linear_pairs", done)
    return model


def _bypass(module: nn.Module, args: tuple, kwargs: dict, output: Any) -> Any:
    x = block_io_tensor(args if args else kwargs)
    return (x,) + tuple(output[1:]) if isinstance(output, tuple) else x


@torch.no_grad()
def _similarity(model: nn.Module, reference: list[torch.Tensor], batches: list[Any]) -> float:
    cos = []
    for ref, batch in zip(reference, batches):
        out = output_tensor(call_model(model, batch)).float()
        cos.append(F.cosine_similarity(out.reshape(out.shape[0], -1), ref.reshape(ref.shape[0], -1), dim=-1))
    return float(torch.cat(cos).mean())


@torch.no_grad()
def _try_merge(model: nn.Module, container: nn.Module, l: int, m: int, reference: list[torch.Tensor],
               batches: list[Any]) -> tuple[float, dict[str, torch.Tensor]]:
    """Similarity to the reference with blocks l..l+m-1 merged into l (model restored afterwards)."""
    group = [container[i] for i in range(l, l + m)]
    params = dict(group[0].named_parameters())
    saved = {n: p.detach().clone() for n, p in params.items()}
    merged = rdsc_merge(group)
    handles = [b.register_forward_hook(_bypass, with_kwargs=True) for b in group[1:]]
    try:
        for n, p in params.items():
            p.copy_(merged[n])
        sim = _similarity(model, reference, batches)
    finally:
        for h in handles:
            h.remove()
        for n, p in params.items():
            p.copy_(saved[n])
    return sim, merged


@register("merge_layers", "similar", MergeLayersConfig, needs=("calib",))
def merge_similar(model: nn.Module, cfg: MergeLayersConfig, ctx: RunContext) -> nn.Module:
    """LaCo: merge runs of similar adjacent blocks by parameter differences, top of the stack first."""
    blocks = find_blocks(model, cfg.container)
    if cfg.n >= len(blocks) or cfg.merge_size > len(blocks):
        raise ConfigError(f"merge_layers.n = {cfg.n} / merge_size = {cfg.merge_size}: {blocks.path} has only "
                          f"{len(blocks)} blocks")
    batches = list(ctx.require("calib", "merge_layers:similar"))[: cfg.max_calib_batches]
    with torch.no_grad():
        reference = [output_tensor(call_model(model, b)).float() for b in batches]
    m, removed, merges = cfg.merge_size, 0, []
    l = len(blocks) - m
    while removed < cfg.n and l >= cfg.min_block:
        container = find_blocks(model, cfg.container).container
        m_now = min(m, cfg.n - removed + 1)
        sim, merged = _try_merge(model, container, l, m_now, reference, batches)
        if sim >= cfg.threshold:
            with torch.no_grad():
                for n, p in container[l].named_parameters():
                    p.copy_(merged[n])
            record_edit(model, drop_blocks(model, blocks.path, list(range(l + 1, l + m_now))))
            merges.append({"into": l, "blocks": m_now, "similarity": round(sim, 4)})
            removed += m_now - 1
            l = min(l - 1, len(model.get_submodule(blocks.path)) - m)
        else:
            l -= 1
    if removed < cfg.n:
        ctx.skip(blocks.path, f"only {removed} of n = {cfg.n} blocks could be merged with output similarity "
                              f">= threshold {cfg.threshold}")
    ctx.note("merges", merges)
    ctx.note("blocks_removed", removed)
    return model
