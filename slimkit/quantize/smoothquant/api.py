"""``quantize: {method: smoothquant}`` handler: per-channel activation maxima, smoothing, W8A8 swap."""
from __future__ import annotations

from torch import nn

from slimkit.core.context import RunContext
from slimkit.core.provenance import record_edit
from slimkit.core.registry import register
from slimkit.core.select import select_modules
from slimkit.io.edits import replace_module
from slimkit.core.select import tied_weight_names
from slimkit.quantize.observers import MinMaxObserver, observe_layers, qparams
from slimkit.quantize.smoothquant.config import SmoothQuantConfig
from slimkit.quantize.smoothquant.core import SmoothQuantLinear, smoothing_factors
from slimkit.quantize.static_int8.api import weight_scale

__all__ = ["quantize_smoothquant"]


@register("quantize", "smoothquant", SmoothQuantConfig, needs=("calib",))
def quantize_smoothquant(model: nn.Module, cfg: SmoothQuantConfig, ctx: RunContext) -> nn.Module:
    """Smooth and quantize every selected Linear (tied ones are skipped and reported)."""
    calib = ctx.require("calib", "quantize")
    tied = tied_weight_names(model)
    layers: dict[str, nn.Module] = {}
    for name, module in select_modules(model, (nn.Linear,), targets=cfg.targets, ignore=cfg.ignore, field="quantize"):
        if name in tied and not cfg.quantize_tied:
            ctx.skip(name, "weight is tied to another module (set quantize_tied: true to store an int8 copy)")
        else:
            layers[name] = module
    # per input channel |x| maxima: observe along the last (feature) axis
    seen = observe_layers(model, layers, lambda: MinMaxObserver(axis=-1), ctx.progress(calib, "calibrating"))
    ratios = []
    for name, linear in layers.items():
        lo, hi = seen[name][0].range()
        absmax = (-lo).clamp_min(0).maximum(hi.clamp_min(0))  # [in]
        smooth = smoothing_factors(absmax, linear.weight, cfg.alpha)
        input_q = qparams((lo / smooth).amin(), (hi / smooth).amax(), symmetric=False)  # smoothed range
        ratios.append(float(absmax.max() / absmax.median().clamp_min(1e-12)))
        new = SmoothQuantLinear.from_linear_smoothed(
            linear, smooth, lambda w: weight_scale(w, cfg.weight_observer, cfg.per_channel), input_q, cfg.activations)
        replace_module(model, name, new)
        record_edit(model, {"op": "replace_module", "path": name, "kind": "smoothquant_linear", "spec": new.spec()})
    ctx.note("quantized_linear_layers", len(layers))
    if ratios:
        ctx.note("max_outlier_ratio", round(max(ratios), 2))  # max/median channel |x| before smoothing
    return model
