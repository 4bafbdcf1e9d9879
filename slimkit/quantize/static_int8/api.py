"""``quantize: {method: static_int8}`` handler: fold BN, calibrate ranges, swap in int8 layers.

Order of work: (1) traceable submodules holding selected convs go through FX graph mode (int8
activations chained, see :mod:`slimkit.quantize.static_int8.graph`); (2) the remaining selected
layers take the per-layer path (BN folded, calibrated input/output ranges); (3) Linear layers named
by ``keep_dynamic`` or measured most sensitive (``auto_keep_dynamic``) run dynamic per-token instead.
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from slimkit.core.context import RunContext
from slimkit.core.errors import UnsupportedModelError
from slimkit.core.inputs import call_model, run_with_hooks
from slimkit.core.provenance import record_edit
from slimkit.core.registry import register
from slimkit.core.select import matching_names, select_modules, tied_weight_names
from slimkit.io.edits import replace_module
from slimkit.quantize.dynamic_int8.core import Int8DynamicLinear
from slimkit.quantize.observers import make_observer, observe_layers, qparams
from slimkit.quantize.static_int8.config import StaticInt8Config
from slimkit.quantize.static_int8.core import FoldedBatchNorm, Int8StaticConv2d, Int8StaticLinear, fold_batchnorm
from slimkit.quantize.static_int8.graph import (clamp_to_activations, convert_region, graph_regions, plain_state,
                                                prepare_region)

__all__ = ["quantize_static_int8", "conv_bn_pairs", "conv_activation_bounds", "weight_scale", "layer_sensitivity"]

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
    """Calibrate activation ranges on ``ctx.calib``, then replace Linear/Conv2d by int8 layers.

    ```yaml
    - quantize: {method: static_int8, graph: auto, auto_keep_dynamic: 8}
    ```
    """
    calib = ctx.require("calib", "quantize")
    layers = _select(model, cfg, ctx)
    if cfg.graph != "off":
        for name in _quantize_graph_regions(model, layers, cfg, calib, ctx):
            layers = {n: m for n, m in layers.items() if not (n == name or n.startswith(name + "."))}
        if not layers:
            return model
    convs = {n: m for n, m in layers.items() if isinstance(m, nn.Conv2d)}
    bounds = conv_activation_bounds(model) if convs else {}
    if cfg.fold_bn and convs:
        _fold_bns(model, convs, ctx)
        layers.update(convs)
    factory = lambda: make_observer(cfg.observer, None, percentile=cfg.percentile, symmetric=False)  # noqa: E731
    seen = observe_layers(model, layers, factory, ctx.progress(calib, "calibrating"), outputs=bool(convs))
    built: dict[str, tuple[nn.Module, str]] = {}
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
        built[name] = (new, kind)
    for name in _dynamic_layers(model, layers, built, cfg, calib, ctx):
        new = Int8DynamicLinear.from_linear(layers[name], cfg.per_channel, "per_token")  # type: ignore[arg-type]
        built[name] = (new, "int8_dynamic_linear")
    for name, (new, kind) in built.items():
        replace_module(model, name, new)
        record_edit(model, {"op": "replace_module", "path": name, "kind": kind, "spec": new.spec()})  # type: ignore[operator]
    ctx.note("quantized_linear_layers", sum(isinstance(m, nn.Linear) for m in layers.values()))
    ctx.note("quantized_conv_layers", len(convs))
    ctx.note("conv_outputs_clamped_to_activation", sum(n in bounds for n in convs))
    return model


def _region_inputs(model: nn.Module, regions: list[str], batch: Any) -> dict[str, tuple[torch.Tensor, ...] | None]:
    """The positional tensor inputs each region receives on one calibration batch (None: not plain tensors)."""
    seen: dict[str, tuple[torch.Tensor, ...] | None] = {}

    def hook(name: str) -> Any:
        def fn(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            if name not in seen:
                plain = not kwargs and args and all(isinstance(a, torch.Tensor) for a in args)
                seen[name] = tuple(a.detach() for a in args) if plain else None
        return fn

    run_with_hooks(model, [batch], [model.get_submodule(r).register_forward_pre_hook(hook(r), with_kwargs=True)
                                    for r in regions])
    return seen


def _float_modules(region: nn.Module, prefix: str, layers: dict[str, nn.Module]) -> list[str]:
    """Region-relative names of the largest submodules holding Conv2d/Linear layers none of which is
    selected: they run in float as a whole (their ReLU6 / add too), e.g. ``ignore: [features.0]``."""
    out: list[str] = []
    for n, m in region.named_modules():
        if not n or any(n.startswith(f + ".") for f in out):
            continue
        weighted = [f"{prefix}.{n}.{c}" if c else f"{prefix}.{n}" for c, sub in m.named_modules()
                    if isinstance(sub, (nn.Conv2d, nn.Linear))]
        if weighted and not any(w in layers for w in weighted):
            out.append(n)
    return out


def _quantize_graph_regions(model: nn.Module, layers: dict[str, nn.Module], cfg: StaticInt8Config, calib: Any,
                            ctx: RunContext) -> list[str]:
    """FX graph mode on every traceable region holding a selected conv; returns the regions done."""
    regions = graph_regions(model, set(layers))
    calib = list(calib)
    inputs = _region_inputs(model, regions, calib[0]) if regions else {}
    for name in [r for r in regions if inputs.get(r) is None]:
        ctx.skip(name, "graph mode needs a region called with positional tensors only; its layers run per layer")
    regions = [r for r in regions if inputs.get(r) is not None]
    if not regions:
        if cfg.graph == "on":
            raise UnsupportedModelError("static_int8 graph: on found no torch.fx-traceable submodule holding a "
                                        "selected Conv2d (the root itself cannot be a region)")
        return []
    specs = {}
    for name in regions:
        region = model.get_submodule(name)
        float_layers = _float_modules(region, name, layers)
        specs[name] = {"observer": cfg.observer, "weight_observer": cfg.weight_observer, "per_channel": cfg.per_channel,
                       "percentile": cfg.percentile, "float_layers": float_layers,
                       "input_shapes": [[1, *t.shape[1:]] for t in inputs[name]]}  # type: ignore[union-attr]
        replace_module(model, name, prepare_region(region, specs[name], inputs[name]))  # type: ignore[arg-type]
    with torch.no_grad():
        for batch in ctx.progress(calib, "calibrating (graph)"):
            call_model(model, batch)
    clamped = convs = 0
    for name in regions:
        prepared = model.get_submodule(name)
        clamped += clamp_to_activations(prepared)  # type: ignore[arg-type]
        converted = convert_region(prepared)  # type: ignore[arg-type]
        bad = [k for k, _ in plain_state(converted)]
        if bad:
            raise UnsupportedModelError(f"static_int8 graph region {name!r} holds state that safetensors cannot store: "
                                        f"{bad[:5]} (set graph: off)")
        convs += sum(type(m).__name__ == "QConv2dInt8" for m in converted.modules())
        replace_module(model, name, converted)
        record_edit(model, {"op": "static_int8_graph", "path": name, "spec": specs[name]})
    ctx.note("graph_regions", regions)
    ctx.note("graph_int8_conv_layers", convs)
    ctx.note("graph_observers_clamped_to_activation", clamped)
    return regions


def _first_tensor(out: Any) -> torch.Tensor:
    """The main output tensor of a model call (a tensor, a tuple's first item, a ModelOutput's first field)."""
    while not isinstance(out, torch.Tensor):
        if isinstance(out, dict):
            out = next(iter(out.values()))
        elif isinstance(out, (tuple, list)) and out:
            out = out[0]
        else:
            raise UnsupportedModelError(f"static_int8 auto_keep_dynamic needs a tensor output, got {type(out).__name__}")
    return out.detach().float()


def layer_sensitivity(model: nn.Module, candidates: dict[str, nn.Module], batches: list[Any]) -> dict[str, float]:
    """Output SQNR (dB) on ``batches`` with only one layer swapped for its candidate, per layer.

    The lower the SQNR, the more that layer's quantization alone costs: the measured per-layer
    sensitivity used by ``auto_keep_dynamic``.
    """
    with torch.no_grad():
        refs = [_first_tensor(call_model(model, b)) for b in batches]
        out: dict[str, float] = {}
        for name, cand in candidates.items():
            original = model.get_submodule(name)
            replace_module(model, name, cand)
            try:
                noise = sum(float((_first_tensor(call_model(model, b)) - r).pow(2).sum()) for b, r in zip(batches, refs))
            finally:
                replace_module(model, name, original)
            signal = sum(float(r.pow(2).sum()) for r in refs)
            out[name] = 10.0 * math.log10(signal / max(noise, 1e-30))
    return out


def _dynamic_layers(model: nn.Module, layers: dict[str, nn.Module], built: dict[str, tuple[nn.Module, str]],
                    cfg: StaticInt8Config, calib: Any, ctx: RunContext) -> list[str]:
    """Linear layers to run dynamic per-token instead of static: ``keep_dynamic`` rules plus the
    ``auto_keep_dynamic`` most sensitive ones (measured on the first calibration batches)."""
    linears = {n for n, m in layers.items() if isinstance(m, nn.Linear)}
    chosen = set()
    if cfg.keep_dynamic:
        chosen = matching_names(model, cfg.keep_dynamic, "keep_dynamic") & linears
        if not chosen:
            raise UnsupportedModelError(f"keep_dynamic {cfg.keep_dynamic} matches no Linear layer static_int8 quantizes")
    if cfg.auto_keep_dynamic:
        batches = list(calib)[:cfg.sensitivity_batches]
        sqnr = layer_sensitivity(model, {n: built[n][0] for n in sorted(linears - chosen)}, batches)
        worst = sorted(sqnr, key=sqnr.get)[:cfg.auto_keep_dynamic]  # type: ignore[arg-type]
        ctx.note("sensitivity_sqnr_db", {n: round(v, 2) for n, v in sorted(sqnr.items(), key=lambda kv: kv[1])[:10]})
        chosen |= set(worst)
    if chosen:
        ctx.note("dynamic_per_token_layers", sorted(chosen))
    return sorted(chosen)
