"""``quantize: {method: static_int8}`` handler: fold BN, calibrate ranges, swap in int8 layers.

Order of work: (1) traceable submodules holding selected convs go through FX graph mode (int8
activations chained, see :mod:`slimkit.quantize.static_int8.graph`); (2) the remaining selected
layers take the per-layer path (BN folded, calibrated input/output ranges); (3) Linear layers named
by ``keep_dynamic`` or measured most sensitive (``auto_keep_dynamic``) run dynamic per-token instead.
The math lives in :mod:`~slimkit.quantize.static_int8.core` and ``graph``; this module orchestrates.
Every fallback (an untraceable model or region) is named in the step's ``fallback`` note.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from slimkit.core.context import RunContext
from slimkit.core.errors import UnsupportedModelError
from slimkit.core.fxtrace import trace_graph
from slimkit.core.inputs import call_model
from slimkit.core.provenance import record_edit
from slimkit.core.registry import register
from slimkit.core.select import matching_names
from slimkit.core.swap import install_layer, swap_layers, swappable_layers
from slimkit.io.edits import replace_module
from slimkit.quantize.dynamic_int8.config import TIED_REASON
from slimkit.quantize.dynamic_int8.core import Int8DynamicLinear
from slimkit.quantize.observers import make_observer, observe_layers
from slimkit.quantize.static_int8.config import StaticInt8Config
from slimkit.quantize.static_int8.core import (FoldedBatchNorm, MeanInput, folded_conv, layer_sensitivity, static_layer,
                                               weight_scale)
from slimkit.quantize.static_int8.graph import (clamp_to_activations, conv_activation_bounds, conv_bn_pairs,
                                                convert_region, float_modules, graph_regions, plain_state,
                                                prepare_region, region_inputs)

__all__ = ["quantize_static_int8"]


def _fallback(ctx: RunContext, reason: str) -> None:
    """Add ``reason`` to the step's ``fallback`` note (several fallbacks are joined with "; ")."""
    previous = ctx.notes.get("fallback")
    ctx.note("fallback", f"{previous}; {reason}" if previous else reason)


def _no_int8_conv(name: str, module: nn.Module) -> str | None:
    if isinstance(module, nn.Conv2d) and module.padding_mode != "zeros":
        return f"padding_mode={module.padding_mode!r} has no int8 conv kernel"
    return None


def _fold_bns(model: nn.Module, convs: dict[str, nn.Module], pairs: list[tuple[str, str]], ctx: RunContext) -> None:
    """Fold every BatchNorm that follows a selected conv into it (float), leaving FoldedBatchNorm."""
    for conv_name, bn_name in pairs:
        if conv_name not in convs:
            continue
        folded = folded_conv(convs[conv_name], model.get_submodule(bn_name))  # type: ignore[arg-type]
        replace_module(model, conv_name, folded)  # replaced again by its int8 conv below
        install_layer(model, bn_name, FoldedBatchNorm())
        convs[conv_name] = folded
    ctx.note("folded_batchnorms", sum(isinstance(m, FoldedBatchNorm) for m in model.modules()))


@register("quantize", "static_int8", StaticInt8Config, needs=("calib",))
def quantize_static_int8(model: nn.Module, cfg: StaticInt8Config, ctx: RunContext) -> nn.Module:
    """Calibrate activation ranges on ``ctx.calib``, then replace Linear/Conv2d by int8 layers.

    ```yaml
    - quantize: {method: static_int8, graph: auto, auto_keep_dynamic: 8}
    ```
    """
    calib = ctx.require("calib", "quantize")
    layers = swappable_layers(model, tuple(getattr(nn, t) for t in cfg.layer_types), ctx, targets=cfg.targets,
                              ignore=cfg.ignore, field="quantize",
                              tied_reason=None if cfg.quantize_tied else TIED_REASON, reject=_no_int8_conv)
    if cfg.graph != "off":
        for name in _quantize_graph_regions(model, layers, cfg, calib, ctx):
            layers = {n: m for n, m in layers.items() if not (n == name or n.startswith(name + "."))}
            if cfg.bias_correction:
                _fallback(ctx, f"bias_correction: graph-mode region {name!r} is not corrected (graph: off corrects it)")
        if not layers:
            return model
    convs = {n: m for n, m in layers.items() if isinstance(m, nn.Conv2d)}
    graph = None
    if convs:
        graph, reason = trace_graph(model)
        if graph is None:
            _fallback(ctx, f"per-layer path: torch.fx cannot trace the model ({reason}); Conv2d+BatchNorm pairs "
                           "taken from nn.Sequential order only and conv output ranges not clamped to a following ReLU")
    bounds = conv_activation_bounds(model, graph)
    if cfg.fold_bn and convs:
        _fold_bns(model, convs, conv_bn_pairs(model, graph), ctx)
        layers.update(convs)
    factory = lambda: make_observer(cfg.observer, None, percentile=cfg.percentile, symmetric=False)  # noqa: E731
    seen = observe_layers(model, layers, factory, ctx.progress(calib, "calibrating"), outputs=bool(convs))
    means: dict[str, torch.Tensor] = {}
    if cfg.bias_correction:
        fed = observe_layers(model, layers, MeanInput, ctx.progress(calib, "bias correction"))
        means = {name: obs.mean() for name, (obs, _) in fed.items()}  # type: ignore[attr-defined]
        ctx.note("bias_corrected_layers", len(means))
    built = {name: static_layer(module, weight_scale(module.weight, cfg.weight_observer, cfg.per_channel, cfg.percentile),
                                seen[name][0], seen[name][1], bounds.get(name), means.get(name))
             for name, module in layers.items()}
    for name in _dynamic_layers(model, layers, built, cfg, calib, ctx):
        built[name] = Int8DynamicLinear.from_linear(layers[name], cfg.per_channel, "per_token")  # type: ignore[arg-type]
    swap_layers(model, layers, lambda name, _: built[name])
    ctx.note("quantized_linear_layers", sum(isinstance(m, nn.Linear) for m in layers.values()))
    ctx.note("quantized_conv_layers", len(convs))
    ctx.note("conv_outputs_clamped_to_activation", sum(n in bounds for n in convs))
    return model


def _graph_candidates(model: nn.Module, layers: dict[str, nn.Module], cfg: StaticInt8Config, calib: list[Any],
                      ctx: RunContext) -> dict[str, tuple[torch.Tensor, ...]]:
    """Traceable regions holding a selected conv, with their example inputs; fallbacks reported."""
    untraceable: dict[str, str] = {}
    regions = graph_regions(model, set(layers), untraceable)
    if untraceable:
        _fallback(ctx, "graph mode: torch.fx cannot trace " + ", ".join(f"{n!r} ({r})" for n, r in untraceable.items())
                  + "; their layers outside traceable sub-regions run per layer")
    inputs = region_inputs(model, regions, calib[0]) if regions else {}
    for name in [r for r in regions if inputs.get(r) is None]:
        ctx.skip(name, "graph mode needs a region called with positional tensors only; its layers run per layer")
    found = {r: inputs[r] for r in regions if inputs.get(r) is not None}
    if not found and cfg.graph == "on":
        raise UnsupportedModelError("static_int8 graph: on found no torch.fx-traceable submodule holding a "
                                    "selected Conv2d (the root itself cannot be a region)")
    return found  # type: ignore[return-value]


def _quantize_graph_regions(model: nn.Module, layers: dict[str, nn.Module], cfg: StaticInt8Config, calib: Any,
                            ctx: RunContext) -> list[str]:
    """FX graph mode on every traceable region holding a selected conv; returns the regions done."""
    calib = list(calib)
    inputs = _graph_candidates(model, layers, cfg, calib, ctx)
    regions = list(inputs)
    if not regions:
        return []
    specs, originals = {}, {}
    for name in regions:
        region = originals[name] = model.get_submodule(name)
        specs[name] = {"observer": cfg.observer, "weight_observer": cfg.weight_observer, "per_channel": cfg.per_channel,
                       "percentile": cfg.percentile, "float_layers": float_modules(region, name, layers),
                       "input_shapes": [[1, *t.shape[1:]] for t in inputs[name]]}
        replace_module(model, name, prepare_region(region, specs[name], inputs[name]))
    with torch.no_grad():
        for batch in ctx.progress(calib, "calibrating (graph)"):
            call_model(model, batch)
    clamped = convs = 0
    done = []
    for name in regions:
        prepared = model.get_submodule(name)
        clamped += clamp_to_activations(prepared)  # type: ignore[arg-type]
        converted = convert_region(prepared)  # type: ignore[arg-type]
        bad = [k for k, _ in plain_state(converted)]
        if bad:  # e.g. a functional F.conv2d (EfficientNet's same-padding conv) becomes an opaque packed weight
            if cfg.graph == "on":
                raise UnsupportedModelError(f"static_int8 graph region {name!r} holds state that safetensors cannot "
                                            f"store: {bad[:5]} (set graph: auto or off)")
            replace_module(model, name, originals[name])
            _fallback(ctx, f"region {name!r}: per-layer path, graph mode left packed state safetensors cannot store "
                           f"({', '.join(bad[:3])})")
            continue
        done.append(name)
        convs += sum(type(m).__name__ == "QConv2dInt8" for m in converted.modules())
        replace_module(model, name, converted)
        record_edit(model, {"op": "static_int8_graph", "path": name, "spec": specs[name]})
    ctx.note("graph_regions", done)
    ctx.note("graph_int8_conv_layers", convs)
    ctx.note("graph_observers_clamped_to_activation", clamped)
    return done


def _dynamic_layers(model: nn.Module, layers: dict[str, nn.Module], built: dict[str, nn.Module],
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
        sqnr = layer_sensitivity(model, {n: built[n] for n in sorted(linears - chosen)}, batches)
        worst = sorted(sqnr, key=sqnr.get)[:cfg.auto_keep_dynamic]  # type: ignore[arg-type]
        ctx.note("sensitivity_sqnr_db", {n: round(v, 2) for n, v in sorted(sqnr.items(), key=lambda kv: kv[1])[:10]})
        chosen |= set(worst)
    if chosen:
        ctx.note("dynamic_per_token_layers", sorted(chosen))
    return sorted(chosen)
