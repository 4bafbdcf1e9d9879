"""Quantization-aware training: fake-quantized weights with a straight-through estimator, and the
integer layer the trained weights are converted to.

During training each selected Linear/Conv2d computes with ``w + (fq(w) − w).detach()``: the forward
sees the symmetric b-bit grid (scale ``max|w_c| / (2^(b−1) − 1)`` per output channel), the backward
passes the gradient straight through to the float weights, which learn to sit well on the grid.

After training: 8-bit Linears become :class:`~slimkit.quantize.dynamic_int8.Int8DynamicLinear`
(real int8 GEMM); everything else becomes :class:`IntWeightLayer`, which stores the b-bit integers
(two per byte at ≤ 4 bits, one int8 each above) with per-channel scales and runs the float op on
weights dequantized once (no sub-8-bit kernel in torch; the runtime name says so).
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from slimkit.io.edits import register_module_kind
from slimkit.quantize.dequant_layer import CachedDequantLayer

__all__ = ["weight_qparams", "fake_quant_ste", "FakeQuantLayer", "IntWeightLayer", "pack_nibbles", "unpack_nibbles"]

_CONV_KEYS = ("stride", "padding", "dilation", "groups")


def weight_qparams(weight: torch.Tensor, bits: int, per_channel: bool) -> torch.Tensor:
    """Symmetric scale ``max|w| / (2^(b−1) − 1)``, per output channel ([out]) or per tensor ([1])."""
    w = weight.detach().reshape(weight.shape[0], -1)
    amax = w.abs().amax(dim=1) if per_channel else w.abs().amax().reshape(1)
    return (amax / (2 ** (bits - 1) - 1)).clamp_min(1e-12)


def _integers(weight: torch.Tensor, scale: torch.Tensor, bits: int) -> torch.Tensor:
    qmax = 2 ** (bits - 1) - 1
    return torch.round(weight / scale.reshape(-1, *([1] * (weight.dim() - 1)))).clamp(-qmax, qmax)


def fake_quant_ste(weight: torch.Tensor, bits: int, per_channel: bool) -> torch.Tensor:
    """Quantize→dequantize in the forward pass, identity gradient in the backward pass."""
    scale = weight_qparams(weight, bits, per_channel)
    fq = _integers(weight, scale, bits) * scale.reshape(-1, *([1] * (weight.dim() - 1)))
    return weight + (fq - weight).detach()


class FakeQuantLayer(nn.Module):
    """Training-time wrapper: runs ``inner`` (Linear or Conv2d) with fake-quantized weights."""

    def __init__(self, inner: nn.Module, bits: int, per_channel: bool) -> None:
        super().__init__()
        self.inner, self.bits, self.per_channel = inner, bits, per_channel

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = fake_quant_ste(self.inner.weight, self.bits, self.per_channel)
        if isinstance(self.inner, nn.Linear):
            return nn.functional.linear(x, w, self.inner.bias)
        return self.inner._conv_forward(x, w, self.inner.bias)  # type: ignore[operator]


def pack_nibbles(q: torch.Tensor) -> torch.Tensor:
    """int values in [-8, 7], [out, n] → uint8 [out, ceil(n/2)] (value + 8, low nibble first)."""
    u = (q.to(torch.int16) + 8).to(torch.uint8)
    u = nn.functional.pad(u, (0, u.shape[1] % 2)).reshape(u.shape[0], -1, 2)
    return u[..., 0] | (u[..., 1] << 4)


def unpack_nibbles(packed: torch.Tensor, n: int) -> torch.Tensor:
    """Inverse of :func:`pack_nibbles`: int8 [out, n]."""
    u = torch.stack((packed & 15, packed >> 4), dim=2).reshape(packed.shape[0], -1)[:, :n]
    return (u.to(torch.int16) - 8).to(torch.int8)


@register_module_kind("int_weight_layer")
class IntWeightLayer(CachedDequantLayer):
    """Linear/Conv2d with b-bit integer weights (packed two per byte at ≤ 4 bits) and per-channel scales."""

    def __init__(self, op: str, weight_shape: tuple[int, ...], bits: int, per_channel: bool, bias: bool,
                 conv: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.op, self.weight_shape, self.bits, self.per_channel = op, tuple(weight_shape), bits, per_channel
        self.conv = dict(conv or {})
        out = self.weight_shape[0]
        self.n = int(torch.tensor(self.weight_shape[1:]).prod())
        self.slimkit_runtime = f"dequantized int{bits} weights, fp32 {op} (no int{bits} kernel)"
        if bits <= 4:
            self.register_buffer("weight_packed", torch.zeros(out, -(-self.n // 2), dtype=torch.uint8))
        else:
            self.register_buffer("weight_int8", torch.zeros(out, self.n, dtype=torch.int8))
        self.register_buffer("weight_scale", torch.ones(out if per_channel else 1))
        self.bias = nn.Parameter(torch.zeros(out), requires_grad=False) if bias else None
        self._weight: torch.Tensor | None = None

    @classmethod
    def from_module(cls, module: nn.Module, bits: int, per_channel: bool) -> "IntWeightLayer":
        conv = None
        if isinstance(module, nn.Conv2d):
            conv = {k: (list(v) if isinstance(v, tuple) else v) for k, v in ((k, getattr(module, k)) for k in _CONV_KEYS)}
        w = module.weight.detach().float()
        layer = cls("conv2d" if conv else "linear", tuple(w.shape), bits, per_channel, module.bias is not None, conv)
        scale = weight_qparams(w, bits, per_channel)
        q = _integers(w, scale, bits).reshape(w.shape[0], -1).to(torch.int8)
        if bits <= 4:
            layer.weight_packed.copy_(pack_nibbles(q))
        else:
            layer.weight_int8.copy_(q)
        layer.weight_scale.copy_(scale)
        if module.bias is not None:
            layer.bias.data.copy_(module.bias.detach().float())
        return layer

    def spec(self) -> dict[str, Any]:
        return {"op": self.op, "weight_shape": list(self.weight_shape), "bits": self.bits,
                "per_channel": self.per_channel, "bias": self.bias is not None, "conv": self.conv}

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> "IntWeightLayer":
        return cls(str(spec["op"]), tuple(spec["weight_shape"]), int(spec["bits"]), bool(spec["per_channel"]),
                   bool(spec["bias"]), spec.get("conv"))

    def integers(self) -> torch.Tensor:
        """The integer weights, int8 [out, n]."""
        return unpack_nibbles(self.weight_packed, self.n) if self.bits <= 4 else self.weight_int8

    def dequantized_weight(self) -> torch.Tensor:
        return (self.integers().float() * self.weight_scale.reshape(-1, 1)).reshape(self.weight_shape)

    def slimkit_weights(self) -> dict[str, torch.Tensor]:
        return {"weight": self.integers(), **({"bias": self.bias} if self.bias is not None else {})}

    def extra_repr(self) -> str:
        return f"op={self.op}, weight_shape={self.weight_shape}, bits={self.bits}, per_channel={self.per_channel}"
