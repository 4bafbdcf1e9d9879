"""SmoothQuant math and its W8A8 Linear layer.

Activation outliers sit in a few input channels; SmoothQuant divides those channels of ``x`` by
``s_j`` and multiplies the matching weight columns by ``s_j`` (``x W^T`` is unchanged), with
``s_j = max|x_j|^α / max|W_:,j|^(1-α)``, so both sides quantize well to int8.

Instead of folding ``1/s`` into a preceding LayerNorm (which needs the graph), the layer
multiplies its input by ``1/s`` right before quantizing it (one extra elementwise pass, merged
into the quantization multiplier on the per-token path); it works for every Linear whatever
precedes it.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from slimkit.io.edits import register_module_kind
from slimkit.quantize.static_int8.core import Int8StaticLinear, int8_runtime, quantize_weight

__all__ = ["smoothing_factors", "SmoothQuantLinear"]


def smoothing_factors(act_absmax: torch.Tensor, weight: torch.Tensor, alpha: float) -> torch.Tensor:
    """``s_j = max|x_j|^α / max|W_:,j|^(1-α)`` per input channel j ([in]); 1 where a side is all zero."""
    w_absmax = weight.detach().float().abs().amax(dim=0)  # [in]
    a = act_absmax.float().clamp_min(1e-5)
    s = a.pow(alpha) / w_absmax.clamp_min(1e-5).pow(1.0 - alpha)
    dead = (act_absmax <= 0) | (w_absmax <= 0)
    return torch.where(dead, torch.ones_like(s), s).clamp(1e-5, 1e5)


@register_module_kind("smoothquant_linear")
class SmoothQuantLinear(Int8StaticLinear):
    """W8A8 Linear whose input is divided per channel by ``smooth`` before int8 quantization.

    ``activations="static"``: one calibrated uint8 (scale, zero point) for the smoothed input,
    fbgemm ``quantized::linear`` (as :class:`Int8StaticLinear`); ``"per_token"``: one symmetric
    int8 scale per row computed at run time, ``torch._int_mm`` (the SmoothQuant paper's O1/O3).
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, per_channel: bool = True,
                 activations: str = "static") -> None:
        super().__init__(in_features, out_features, bias, per_channel)
        self.activations = activations
        kernel = "fbgemm quantized::linear" if activations == "static" else "_int_mm"
        self.kernel = f"torch int8 ({kernel}, SmoothQuant, {activations} activations)"  # CPU; see int8_runtime
        self.register_buffer("smooth", torch.ones(in_features))

    @classmethod
    def from_linear_smoothed(cls, linear: nn.Linear, smooth: torch.Tensor, weight_scale_fn: Any,
                             input_qparams: tuple[torch.Tensor, torch.Tensor], activations: str) -> "SmoothQuantLinear":
        """Quantize ``W · diag(smooth)`` with ``weight_scale_fn(weight) -> scale``."""
        weight = linear.weight.detach().float() * smooth.reshape(1, -1)  # [out, in]
        w_scale = weight_scale_fn(weight)
        layer = cls(linear.in_features, linear.out_features, linear.bias is not None, w_scale.numel() > 1, activations)
        layer.weight_int8.copy_(quantize_weight(weight, w_scale))
        layer.weight_scale.copy_(w_scale)
        layer.input_scale.copy_(input_qparams[0].reshape(1))
        layer.input_zero_point.copy_(input_qparams[1].reshape(1))
        layer.smooth.copy_(smooth)
        if linear.bias is not None:
            layer.bias.data.copy_(linear.bias.detach().float())
        return layer

    def spec(self) -> dict[str, Any]:
        return {**super().spec(), "activations": self.activations}

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> "SmoothQuantLinear":
        return cls(int(spec["in_features"]), int(spec["out_features"]), bool(spec["bias"]), bool(spec["per_channel"]),
                   str(spec.get("activations", "static")))

    def dequantized_weight(self) -> torch.Tensor:
        return super().dequantized_weight() / self.smooth.reshape(1, -1)

    def _pack(self) -> Any:
        inv_smooth = self.smooth.reciprocal()  # [in]
        if self.activations == "static":
            return (*super()._pack(), inv_smooth)
        return self.weight_int8.t().contiguous(), self.weight_scale.float(), inv_smooth  # [in, out] for _int_mm

    def _fbgemm(self, x2: torch.Tensor) -> torch.Tensor:
        packed, scale, zero, inv_smooth = self.packed()
        return self._qlinear(x2 * inv_smooth, scale, zero, packed)

    @property
    def slimkit_runtime(self) -> str:
        if self.activations == "static":
            return super().slimkit_runtime
        return int8_runtime(self.kernel, self.weight_int8.device)  # _int_mm: exact on every x86 CPU

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.activations == "static" or x.device.type != "cpu":
            return super().forward(x)
        w_t, w_scale, inv_smooth = self.packed()
        shape = x.shape
        x2 = x.reshape(-1, shape[-1]).float() * inv_smooth  # smoothed [tokens, in]
        s_x = (x2.abs().amax(dim=1, keepdim=True) / 127.0).clamp_min(1e-12)  # [tokens, 1]
        xq = (x2 * s_x.reciprocal()).round_().to(torch.int8)  # |·| <= 127 by construction
        out = torch._int_mm(xq, w_t).float().mul_(s_x).mul_(w_scale)
        if self.bias is not None:
            out.add_(self.bias)
        return out.reshape(*shape[:-1], self.out_features).to(x.dtype)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, activations={self.activations}"
