"""int8 weight quantization math and the int8 dynamic Linear layer.

The layer stores plain tensors (``weight_int8`` int8 [out, in], ``weight_scale`` float32 [out] or
[1], ``bias``), so checkpoints hold real int8 bytes. Two execution paths, both integer GEMMs with
int32 accumulation:

* ``activations="per_token"`` (default): each row (token) of the input gets its own symmetric
  int8 scale, then ``torch._int_mm`` (int8 × int8 → int32) and a float rescale
  ``y = acc · s_x[row] · s_w[col]``. Per-token scales keep LLM activation outliers from crushing
  the resolution of every other token (SmolLM2 perplexity: ×1.49 with one scale per batch).
* ``activations="per_tensor"``: fbgemm's ``quantized::linear_dynamic`` (one uint8 min/max range
  per call), with ``reduce_range=False`` on CPUs with VNNI and ``True`` where fbgemm's uint8 x int8
  pairs saturate int16 (x86 without VNNI, see :mod:`slimkit.quantize.fbgemm`).
"""
from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import nn

from slimkit.io.edits import register_module_kind
from slimkit.quantize.fbgemm import fbgemm_u8s8_exact
from slimkit.quantize.static_int8.core import int8_runtime

__all__ = ["quantize_per_channel", "Int8DynamicLinear"]


def quantize_per_channel(weight: torch.Tensor, per_channel: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int8: ``scale = max|w| / 127`` per output row (or per tensor); returns (q, scale)."""
    w = weight.detach().float()
    amax = w.abs().amax(dim=1) if per_channel else w.abs().amax().reshape(1)
    scale = (amax / 127.0).clamp_min(1e-12)
    q = torch.round(w / scale.reshape(-1, 1)).clamp_(-127, 127).to(torch.int8)
    return q, scale


_RUNTIMES = {
    "per_token": "torch int8 (_int_mm, per-token activations)",
    "per_tensor": "torch int8 (fbgemm quantized::linear_dynamic)",
}


@register_module_kind("int8_dynamic_linear")
class Int8DynamicLinear(nn.Module):
    """Linear layer with int8 weights executed on torch's fbgemm/x86 int8 kernel."""


    def __init__(self, in_features: int, out_features: int, bias: bool = True, per_channel: bool = True,
                 activations: str = "per_token") -> None:
        super().__init__()
        self.in_features, self.out_features, self.per_channel = in_features, out_features, per_channel
        self.activations = activations
        self.register_buffer("weight_int8", torch.zeros(out_features, in_features, dtype=torch.int8))
        self.register_buffer("weight_scale", torch.ones(out_features if per_channel else 1))
        self.bias = nn.Parameter(torch.zeros(out_features), requires_grad=False) if bias else None
        self._packed: Any = None

    @property
    def slimkit_runtime(self) -> str:
        """The integer kernel where the weights are on the CPU, else the dequantized float path."""
        kernel = _RUNTIMES[self.activations]
        if self.activations == "per_tensor" and not fbgemm_u8s8_exact():
            kernel += " with reduce_range (7-bit activations: this CPU's uint8 x int8 kernel saturates, no VNNI)"
        return int8_runtime(kernel, self.weight_int8.device)

    @classmethod
    def from_linear(cls, linear: nn.Linear, per_channel: bool = True, activations: str = "per_token") -> "Int8DynamicLinear":
        layer = cls(linear.in_features, linear.out_features, linear.bias is not None, per_channel, activations)
        q, scale = quantize_per_channel(linear.weight, per_channel)
        layer.weight_int8.copy_(q)
        layer.weight_scale.copy_(scale)
        if linear.bias is not None:
            layer.bias.data.copy_(linear.bias.detach().float())
        return layer

    # -- checkpoint replay
    def spec(self) -> dict[str, Any]:
        return {"in_features": self.in_features, "out_features": self.out_features,
                "bias": self.bias is not None, "per_channel": self.per_channel, "activations": self.activations}

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> "Int8DynamicLinear":
        return cls(int(spec["in_features"]), int(spec["out_features"]), bool(spec["bias"]), bool(spec["per_channel"]),
                   str(spec.get("activations", "per_token")))

    # -- measurement: logical weights for parameter counting
    def slimkit_weights(self) -> dict[str, torch.Tensor]:
        out = {"weight": self.weight_int8}
        if self.bias is not None:
            out["bias"] = self.bias
        return out

    def dequantized_weight(self) -> torch.Tensor:
        return self.weight_int8.float() * self.weight_scale.reshape(-1, 1)

    # -- execution
    def _pack(self) -> Any:
        if self.activations == "per_token":
            return self.weight_int8.t().contiguous()  # [in, out] for _int_mm
        return self._pack_fbgemm()

    def _pack_fbgemm(self) -> Any:
        # torch >= 2.10 warns that quantized-tensor constructors are deprecated; they are still the
        # only way into fbgemm's prepacked int8 GEMM, so the warning is silenced here only.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            return self._pack_unchecked()

    def _pack_unchecked(self) -> Any:
        scale = self.weight_scale.double()
        if self.per_channel:
            zeros = torch.zeros(self.out_features, dtype=torch.int64)
            qw = torch._make_per_channel_quantized_tensor(self.weight_int8, scale, zeros, 0)
        else:
            qw = torch._make_per_tensor_quantized_tensor(self.weight_int8, float(scale[0]), 0)
        bias = self.bias.detach().float() if self.bias is not None else None
        return torch.ops.quantized.linear_prepack(qw, bias)

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        self._packed = None  # new tensors: repack at next call
        super()._load_from_state_dict(*args, **kwargs)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_packed"] = None  # packed fbgemm weights are not copyable; rebuilt lazily
        return state

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu":  # no int8 kernel here: dequantize (reported by the runtime name)
            return nn.functional.linear(x, self.dequantized_weight().to(x), None if self.bias is None else self.bias.to(x))
        if self._packed is None:
            self._packed = self._pack()
        shape = x.shape
        x2 = x.reshape(-1, shape[-1]).float().contiguous()  # [tokens, in]
        if self.activations == "per_token":
            out = self._per_token(x2)
        else:
            # reduce_range (7-bit activations) only where fbgemm's uint8 x int8 pairs saturate (no VNNI)
            out = torch.ops.quantized.linear_dynamic(x2, self._packed, not fbgemm_u8s8_exact())
        return out.reshape(*shape[:-1], self.out_features).to(x.dtype)

    def _per_token(self, x2: torch.Tensor) -> torch.Tensor:
        s_x = (x2.abs().amax(dim=1, keepdim=True) / 127.0).clamp_min(1e-12)  # [tokens, 1]
        # |x · (1/s)| <= 127 up to rounding, so no clamp; in-place round is ~2x faster than x / s
        xq = (x2 * s_x.reciprocal()).round_().to(torch.int8)
        acc = torch._int_mm(xq, self._packed)  # int32 [tokens, out]
        out = acc.float().mul_(s_x).mul_(self.weight_scale)
        return out.add_(self.bias) if self.bias is not None else out

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"per_channel={self.per_channel}, activations={self.activations}")
