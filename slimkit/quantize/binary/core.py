"""Binary (1-bit) and ternary (2-bit) weights with per-output-channel scales, stored packed.

* binary (XNOR-Net): ``w ≈ α_c · sign(w)``, ``α_c = mean |w_c|`` (the L2-optimal scale for signs).
* ternary (TWN): ``w ≈ α_c · t``, ``t ∈ {-1, 0, +1}``, threshold ``Δ_c = δ · mean |w_c|``
  (δ = 0.7 in the paper), ``α_c = mean |w| over |w| > Δ_c``.

Codes are packed 8 (binary) or 4 (ternary) per uint8 byte along each output channel's flattened
row, so the checkpoint holds 1 or 2 bits per weight. There is no binary GEMM kernel in torch:
the layer unpacks to float once, on the first forward, and runs the ordinary float
Linear/Conv2d (runtime name says so) — bytes shrink, latency does not.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from slimkit.io.edits import register_module_kind
from slimkit.quantize.dequant_layer import CachedDequantLayer

__all__ = ["binarize", "ternarize", "pack_codes", "unpack_codes", "LowBitLayer"]


def binarize(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(codes in {-1, +1} int8 [out, n], α [out]) for ``weight`` flattened per output channel."""
    w = weight.detach().float().reshape(weight.shape[0], -1)
    codes = torch.where(w >= 0, 1, -1).to(torch.int8)
    return codes, w.abs().mean(dim=1)


def ternarize(weight: torch.Tensor, delta: float = 0.7) -> tuple[torch.Tensor, torch.Tensor]:
    """(codes in {-1, 0, +1} int8 [out, n], α [out]) with threshold ``delta · mean|w|`` per channel."""
    w = weight.detach().float().reshape(weight.shape[0], -1)
    thresh = delta * w.abs().mean(dim=1, keepdim=True)  # [out, 1]
    keep = w.abs() > thresh
    codes = (torch.sign(w) * keep).to(torch.int8)
    alpha = (w.abs() * keep).sum(dim=1) / keep.sum(dim=1).clamp_min(1)
    return codes, alpha


def pack_codes(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Pack codes ([out, n] in {-1, 1} for 1 bit, {-1, 0, 1} for 2 bits) into uint8 [out, ceil(n·bits/8)]."""
    per_byte = 8 // bits
    u = (codes > 0).to(torch.uint8) if bits == 1 else (codes + 1).to(torch.uint8)  # 0/1 or 0/1/2
    pad = (-u.shape[1]) % per_byte
    u = torch.nn.functional.pad(u, (0, pad)).reshape(u.shape[0], -1, per_byte)  # [out, bytes, per_byte]
    shifts = torch.arange(per_byte, dtype=torch.uint8) * bits
    return (u << shifts).sum(dim=2, dtype=torch.uint8)


def unpack_codes(packed: torch.Tensor, bits: int, n: int) -> torch.Tensor:
    """Inverse of :func:`pack_codes`: int8 codes [out, n]."""
    per_byte = 8 // bits
    shifts = torch.arange(per_byte, dtype=torch.uint8) * bits
    u = (packed.unsqueeze(2) >> shifts) & ((1 << bits) - 1)  # [out, bytes, per_byte]
    u = u.reshape(packed.shape[0], -1)[:, :n].to(torch.int8)
    return u * 2 - 1 if bits == 1 else u - 1


_CONV_KEYS = ("stride", "padding", "dilation", "groups")


@register_module_kind("lowbit_weight_layer")
class LowBitLayer(CachedDequantLayer):
    """Linear or Conv2d whose weight is packed 1-bit / 2-bit codes times a per-channel scale."""

    def __init__(self, op: str, weight_shape: tuple[int, ...], bits: int, bias: bool,
                 conv: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.op, self.weight_shape, self.bits, self.conv = op, tuple(weight_shape), bits, dict(conv or {})
        out, n = self.weight_shape[0], int(torch.tensor(self.weight_shape[1:]).prod())
        self.n = n
        self.slimkit_runtime = f"dequantized {'binary' if bits == 1 else 'ternary'} weights, fp32 {op} (no {bits}-bit kernel)"
        self.register_buffer("weight_packed", torch.zeros(out, -(-n * bits // 8), dtype=torch.uint8))
        self.register_buffer("weight_scale", torch.ones(out))
        self.bias = nn.Parameter(torch.zeros(out), requires_grad=False) if bias else None
        self._weight: torch.Tensor | None = None

    @classmethod
    def from_module(cls, module: nn.Module, codes: torch.Tensor, alpha: torch.Tensor, bits: int) -> "LowBitLayer":
        conv = None
        if isinstance(module, nn.Conv2d):
            conv = {k: (list(v) if isinstance(v, tuple) else v) for k, v in ((k, getattr(module, k)) for k in _CONV_KEYS)}
        op = "conv2d" if conv is not None else "linear"
        layer = cls(op, tuple(module.weight.shape), bits, module.bias is not None, conv)
        layer.weight_packed.copy_(pack_codes(codes, bits))
        layer.weight_scale.copy_(alpha)
        if module.bias is not None:
            layer.bias.data.copy_(module.bias.detach().float())
        return layer

    def spec(self) -> dict[str, Any]:
        return {"op": self.op, "weight_shape": list(self.weight_shape), "bits": self.bits,
                "bias": self.bias is not None, "conv": self.conv}

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> "LowBitLayer":
        return cls(str(spec["op"]), tuple(spec["weight_shape"]), int(spec["bits"]), bool(spec["bias"]), spec.get("conv"))

    def codes(self) -> torch.Tensor:
        return unpack_codes(self.weight_packed, self.bits, self.n)

    def dequantized_weight(self) -> torch.Tensor:
        return (self.codes().float() * self.weight_scale.reshape(-1, 1)).reshape(self.weight_shape)

    def slimkit_weights(self) -> dict[str, torch.Tensor]:
        return {"weight": self.codes().reshape(self.weight_shape), **({"bias": self.bias} if self.bias is not None else {})}

    def extra_repr(self) -> str:
        return f"op={self.op}, weight_shape={self.weight_shape}, bits={self.bits}"
