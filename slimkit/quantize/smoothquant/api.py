"""``quantize: {method: smoothquant}`` handler: per-channel activation maxima, smoothing, W8A8 swap."""
from __future__ import annotations

from torch import nn

from slimkit.core.context import RunContext
from slimkit.core.registry import register
from slimkit.core.swap import swap_layers, swappable_layers
from slimkit.quantize.dynamic_int8.config import TIED_REASON
from slimkit.quantize.observers import MinMaxObserver, observe_layers, qparams
from slimkit.quantize.smoothquant.config import SmoothQuantConfig
from slimkit.quantize.smoothquant.core import SmoothQuantLinear, smoothing_factors
from slimkit.quantize.static_int8.core import weight_scale

__all__ = ["quantize_smoothquant"]


@register("quantize", "smoothquant", SmoothQuantConfig, needs=("calib",))
def quantize_smoothquant(model: nn.Module, cfg: SmoothQuantConfig, ctx: RunContext) -> nn.Module:
    """Smooth and quantize every selected Linear (tied ones are skipped and reported)."""
    calib = ctx.require("calib", "quantize")
    layers = swappable_layers(model, (nn.Linear,), ctx, targets=cfg.targets, ignore=cfg.ignore, field="quantize",
                              tied_reason=None if cfg.quantize_tied else TIED_REASON)
    # per input channel |x| maxima: observe along the last (feature) axis
    seen = observe_layers(model, layers, lambda: MinMaxObserver(axis=-1), ctx.progress(calib, "calibrating"))
    ratios = []

    def build(name: str, linear: nn.Module) -> nn.Module:
        lo, hi = seen[name][0].range()
        absmax = (-lo).clamp_min(0).maximum(hi.clamp_min(0))  # [in]
        smooth = smoothing_factors(absmax, linear.weight, cfg.alpha)
        input_q = qparams((lo / smooth).amin(), (hi / smooth).amax(), symmetric=False)  # smoothed range
        ratios.append(float(absmax.max() / absmax.median().clamp_min(1e-12)))
        return SmoothQuantLinear.from_linear_smoothed(
            linear, smooth, lambda w: weight_scale(w, cfg.weight_observer, cfg.per_channel), input_q, cfg.activations)

    done = swap_layers(model, layers, build)
    ctx.note("quantized_linear_layers", len(done))
    if ratios:
        ctx.note("max_outlier_ratio", round(max(ratios), 2))  # max/median channel |x| before smoothing
    return model
