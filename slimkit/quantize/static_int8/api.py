"""``quantize: {method: static_int8}`` handler: fold BN, calibrate ranges, swap in int8 layers."""
from __future__ import annotations

import torch
from torch import nn

from slimkit.core.context import RunContext
from slimkit.core.provenance import record_edit
from slimkit.core.registry import register
from slimkit.core.select import select_modules
from slimkit.io.edits import replace_module
from slimkit.core.select import tied_weight_names
from slimkit.quantize.observers import make_observer, observe_layers, qparams
from slimkit.quantize.static_int8.config import StaticInt8Config
from slimkit.quantize.static_int8.core import FoldedBatchNorm, Int8StaticConv2d, Int8StaticLinear, fold_batchnorm

__all__ = ["quantize_static_int8", "conv_bn_pairs", "conv_activation_bounds", "weight_scale"]

#: activations after which only part of a conv's output range matters: (lowest, highest) kept
_CLAMPS = {nn.ReLU: (0.0, float("inf")), nn.ReLU6: (0.0, 6.0)}


def conv_bn_pairs(model: nn.Module) -> list[tuple[str, str]]:
    """(conv, bn) names where a Conv2d's output feeds only a BatchNorm2d.

    Traced with torch.fx when the model traces; otherwise adjacent children of ``nn.Sequential``.
    """
    try:
        graph = torch.fx.symbolic_trace(model).graph
    except Exception:  # noqa: BLE001 - any tracing failure: fall back to the Sequential rule
        return _sequential_pairs(model)
    modules = dict(model.named_modules())
    pairs = []
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(modules.get(node.target), nn.BatchNorm2d):
            continue
        src = node.args[0] if node.args else None
        if (isinstance(src, torch.fx.Node) and src.op == "call_module"
                and isinstance(modules.get(src.target), nn.Conv2d) and len(src.users) == 1):
            pairs.append((str(src.target), str(node.target)))
    return pairs


def conv_activation_bounds(model: nn.Module) -> dict[str, tuple[float, float]]:
    """Convs whose output (through an optional BatchNorm) feeds only a ReLU / ReLU6: the range the
    activation keeps. Clamping the conv's int8 output range to it is exact (the activation would
    clamp those values anyway) and doubles the resolution of the part that matters."""
    try:
        graph = torch.fx.symbolic_trace(model).graph
    except Exception:  # noqa: BLE001 - untraceable: no clamping, plain observed ranges
        return {}
    modules = dict(model.named_modules())
    bounds = {}
    for node in graph.nodes:
        kind = type(modules.get(node.target)) if node.op == "call_module" else None
        if kind not in _CLAMPS or not node.args or not isinstance(node.args[0], torch.fx.Node):
            continue
        src = node.args[0]
        if src.op == "call_module" and isinstance(modules.get(src.target), nn.BatchNorm2d) and len(src.users) == 1:
            src = src.args[0]
        if (isinstance(src, torch.fx.Node) and src.op == "call_module" and isinstance(modules.get(src.target), nn.Conv2d)
                and len(src.users) == 1):
            bounds[str(src.target)] = _CLAMPS[kind]  # type: ignore[index]
    return bounds


def _sequential_pairs(model: nn.Module) -> list[tuple[str, str]]:
    pairs = []
    for name, module in model.named_modules():
        if isinstance(module, nn.Sequential):
            kids = list(module.named_children())
            for (a, ma), (b, mb) in zip(kids, kids[1:]):
                if isinstance(ma, nn.Conv2d) and isinstance(mb, nn.BatchNorm2d):
                    prefix = f"{name}." if name else ""
                    pairs.append((prefix + a, prefix + b))
    return pairs


def weight_scale(weight: torch.Tensor, observer: str, per_channel: bool, percentile: float = 99.99) -> torch.Tensor:
    """Symmetric int8 weight scale ([out] per channel, [1] per tensor) from a weight observer."""
    obs = make_observer(observer, 0 if per_channel else None, percentile=percentile)
    obs.update(weight)
    return qparams(*obs.range(), bits=8, symmetric=True)[0]


def _fold_bns(model: nn.Module, convs: dict[str, nn.Module], ctx: RunContext) -> None:
    """Fold every BatchNorm that follows a selected conv into it (float), leaving FoldedBatchNorm."""
    for conv_name, bn_name in conv_bn_pairs(model):
        if conv_name not in convs:
            continue
        conv, bn = convs[conv_name], model.get_submodule(bn_name)
        weight, bias = fold_batchnorm(conv, bn)  # type: ignore[arg-type]
        folded = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,  # type: ignore[arg-type]
                           conv.dilation, conv.groups, bias=True, padding_mode=conv.padding_mode)  # type: ignore[arg-type]
        with torch.no_grad():
            folded.weight.copy_(weight)
            folded.bias.copy_(bias)
        replace_module(model, conv_name, folded)
        replace_module(model, bn_name, FoldedBatchNorm())
        record_edit(model, {"op": "replace_module", "path": bn_name, "kind": "folded_batchnorm", "spec": {}})
        convs[conv_name] = folded
    ctx.note("folded_batchnorms", sum(isinstance(m, FoldedBatchNorm) for m in model.modules()))


def _select(model: nn.Module, cfg: StaticInt8Config, ctx: RunContext) -> dict[str, nn.Module]:
    types = tuple(getattr(nn, t) for t in cfg.layer_types)
    tied = tied_weight_names(model)
    chosen: dict[str, nn.Module] = {}
    for name, module in select_modules(model, types, targets=cfg.targets, ignore=cfg.ignore, field="quantize"):
        if name in tied and not cfg.quantize_tied:
            ctx.skip(name, "weight is tied to another module (set quantize_tied: true to store an int8 copy)")
        elif isinstance(module, nn.Conv2d) and module.padding_mode != "zeros":
            ctx.skip(name, f"padding_mode={module.padding_mode!r} has no int8 conv kernel")
        else:
            chosen[name] = module
    return chosen


@register("quantize", "static_int8", StaticInt8Config, needs=("calib",))
def quantize_static_int8(model: nn.Module, cfg: StaticInt8Config, ctx: RunContext) -> nn.Module:
    """Calibrate activation ranges on ``ctx.calib``, then replace Linear/Conv2d by int8 layers."""
    calib = ctx.require("calib", "quantize")
    layers = _select(model, cfg, ctx)
    convs = {n: m for n, m in layers.items() if isinstance(m, nn.Conv2d)}
    bounds = conv_activation_bounds(model) if convs else {}
    if cfg.fold_bn and convs:
        _fold_bns(model, convs, ctx)
        layers.update(convs)
    factory = lambda: make_observer(cfg.observer, None, percentile=cfg.percentile, symmetric=False)  # noqa: E731
    seen = observe_layers(model, layers, factory, ctx.progress(calib, "calibrating"), outputs=bool(convs))
    for name, module in layers.items():
        obs_in, obs_out = seen[name]
        w_scale = weight_scale(module.weight, cfg.weight_observer, cfg.per_channel, cfg.percentile)
        if isinstance(module, nn.Linear):
            new: nn.Module = Int8StaticLinear.from_linear(module, w_scale, qparams(*obs_in.range(), symmetric=False))
            kind = "int8_static_linear"
        else:
            in_q = qparams(*obs_in.range(), symmetric=False)
            lo, hi = obs_out.range()  # type: ignore[union-attr]
            if name in bounds:  # a ReLU/ReLU6 follows: only [0, 6] (or [0, hi]) survives it
                lo, hi = lo.clamp(min=bounds[name][0]), hi.clamp(max=bounds[name][1])
            out_q = qparams(lo, hi, symmetric=False)
            new = Int8StaticConv2d.from_float(module, module.weight, module.bias, w_scale, in_q, out_q)  # type: ignore[arg-type]
            kind = "int8_static_conv2d"
        replace_module(model, name, new)
        record_edit(model, {"op": "replace_module", "path": name, "kind": kind, "spec": new.spec()})  # type: ignore[operator]
    ctx.note("quantized_linear_layers", sum(isinstance(m, nn.Linear) for m in layers.values()))
    ctx.note("quantized_conv_layers", len(convs))
    ctx.note("conv_outputs_clamped_to_activation", sum(n in bounds for n in convs))
    return model
