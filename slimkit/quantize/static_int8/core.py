"""Static int8 layers (calibrated activation scales) and Conv+BatchNorm folding.

Every layer holds plain tensors (int8 weights, float scales, int zero points) so checkpoints are
safetensors of real int8 bytes; the kernels' packed forms are rebuilt lazily after loading.

* :class:`Int8StaticLinear`: activations quantized to uint8 with ONE calibrated (scale, zero
  point) — no run-time min/max pass, unlike dynamic int8 — inside a single fbgemm call that
  multiplies uint8 × int8 with int32 accumulation and returns fp32.
* :class:`Int8StaticConv2d`: fbgemm/x86 ``quantized::conv2d`` on quint8 activations with calibrated
  input and output (scale, zero point): quantize → integer conv → dequantize, per layer.
* :class:`FoldedBatchNorm`: the identity left where a BatchNorm was folded into its conv.

Also the math the ``static_int8`` handler orchestrates: weight scales from an observer
(:func:`weight_scale`), BatchNorm folding into a float conv (:func:`folded_conv`), the int8 layer
for one calibrated layer (:func:`static_layer`) and the per-layer output sensitivity that picks the
layers kept dynamic (:func:`layer_sensitivity`).
"""
from __future__ import annotations

import math
import warnings
from typing import Any

import torch
from torch import nn

from slimkit.core.errors import DataError, UnsupportedModelError
from slimkit.core.inputs import call_model
from slimkit.io.edits import register_module_kind, replace_module
from slimkit.quantize.fbgemm import EMULATED, fbgemm_u8s8_exact
from slimkit.quantize.observers import Observer, make_observer, qparams

__all__ = ["Int8StaticLinear", "Int8StaticConv2d", "FoldedBatchNorm", "fold_batchnorm", "quantize_weight",
           "weight_scale", "folded_conv", "static_layer", "layer_sensitivity", "int8_runtime", "MeanInput",
           "bias_correction"]


def int8_runtime(kernel: str, device: torch.device) -> str:
    """What an int8 layer whose weights live on ``device`` really executes.

    The int8 layers call their integer kernel (``kernel``: fbgemm / ``_int_mm``) on the CPU only;
    on any other device they dequantize the weights and run a float matmul, and say so.
    """
    if device.type == "cpu":
        return kernel
    return f"dequantized fp matmul on {device.type} (int8 weights; no int8 kernel used there)"


def quantize_weight(weight: torch.Tensor, scale: torch.Tensor, bits: int = 8) -> torch.Tensor:
    """Symmetric integer weight ``round(w / scale)`` (scale per output channel [out] or [1]), as int8."""
    qmax = 2 ** (bits - 1) - 1
    s = scale.reshape(-1, *([1] * (weight.dim() - 1)))
    return torch.round(weight.detach().float() / s).clamp_(-qmax, qmax).to(torch.int8)


def fold_batchnorm(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """(weight, bias) of the conv followed by the eval-mode BatchNorm, as one conv.

    ``y = γ (conv(x) + b − μ) / √(σ² + ε) + β``, so the weight rows scale by ``γ / √(σ² + ε)``.
    """
    var = bn.running_var if bn.running_var is not None else torch.ones(bn.num_features)
    mean = bn.running_mean if bn.running_mean is not None else torch.zeros(bn.num_features)
    gamma = bn.weight if bn.weight is not None else torch.ones(bn.num_features)
    beta = bn.bias if bn.bias is not None else torch.zeros(bn.num_features)
    factor = (gamma / torch.sqrt(var + bn.eps)).detach()  # [out]
    bias = conv.bias.detach() if conv.bias is not None else torch.zeros(conv.out_channels)
    weight = conv.weight.detach() * factor.reshape(-1, 1, 1, 1)
    return weight, (bias - mean) * factor + beta.detach()


@register_module_kind("folded_batchnorm")
class FoldedBatchNorm(nn.Identity):
    """Where a BatchNorm stood before it was folded into the preceding convolution."""

    def spec(self) -> dict[str, Any]:
        return {}

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> "FoldedBatchNorm":
        return cls()


class _LazyPacked(nn.Module):
    """Caches the kernel's packed weight; dropped on state loading and on copying.

    ``slimkit_runtime`` names the CPU ``kernel`` where the weights are on the CPU, else the
    dequantized float path the layer really takes (:func:`int8_runtime`).
    """

    _packed: Any = None
    kernel: str = ""

    @property
    def slimkit_runtime(self) -> str:
        if self.weight_int8.device.type == "cpu" and not fbgemm_u8s8_exact():
            return EMULATED
        return int8_runtime(self.kernel, self.weight_int8.device)

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        self._packed = None
        super()._load_from_state_dict(*args, **kwargs)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_packed"] = None
        return state

    def packed(self) -> Any:
        if self._packed is None:
            self._packed = self._pack()
        return self._packed

    def _pack(self) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError


def _fbgemm_weight(weight_int8: torch.Tensor, weight_scale: torch.Tensor) -> torch.Tensor:
    """A qint8 quantized tensor (per output channel when ``weight_scale`` has several entries)."""
    scale = weight_scale.double()
    if scale.numel() > 1:
        zeros = torch.zeros(scale.numel(), dtype=torch.int64)
        return torch._make_per_channel_quantized_tensor(weight_int8, scale, zeros, 0)
    return torch._make_per_tensor_quantized_tensor(weight_int8, float(scale[0]), 0)


@register_module_kind("int8_static_linear")
class Int8StaticLinear(_LazyPacked):
    """Linear with int8 weights and statically calibrated uint8 activations on fbgemm.

    One fbgemm call does it all: ``quantized::linear_with_input_q_dq_qweight_dq_output_fp32``
    quantizes the fp32 input with the calibrated (scale, zero point), multiplies uint8 × int8 with
    int32 accumulation against the prepacked weight and returns fp32 (bias added). No run-time
    min/max pass, no requantized output. Needs a CPU with VNNI for exactness (no int16
    saturation; ``reduce_range`` is not used).
    """

    kernel = "torch int8 (fbgemm quantized::linear, static activation qparams)"

    def __init__(self, in_features: int, out_features: int, bias: bool = True, per_channel: bool = True) -> None:
        super().__init__()
        self.in_features, self.out_features, self.per_channel = in_features, out_features, per_channel
        self.register_buffer("weight_int8", torch.zeros(out_features, in_features, dtype=torch.int8))
        self.register_buffer("weight_scale", torch.ones(out_features if per_channel else 1))
        self.register_buffer("input_scale", torch.ones(1))
        self.register_buffer("input_zero_point", torch.zeros(1, dtype=torch.int32))
        self.bias = nn.Parameter(torch.zeros(out_features), requires_grad=False) if bias else None

    @classmethod
    def from_linear(cls, linear: nn.Linear, weight_scale: torch.Tensor,
                    input_qparams: tuple[torch.Tensor, torch.Tensor], weight: torch.Tensor | None = None,
                    bias: torch.Tensor | None = None) -> "Int8StaticLinear":
        """From ``linear`` (or its replacement ``weight`` / ``bias``), a weight scale and uint8 input (scale, zero point)."""
        bias = linear.bias if bias is None else bias
        layer = cls(linear.in_features, linear.out_features, bias is not None, weight_scale.numel() > 1)
        layer.weight_int8.copy_(quantize_weight(linear.weight if weight is None else weight, weight_scale))
        layer.weight_scale.copy_(weight_scale)
        layer.input_scale.copy_(input_qparams[0].reshape(1))
        layer.input_zero_point.copy_(input_qparams[1].reshape(1))
        if bias is not None:
            layer.bias.data.copy_(bias.detach().float())
        return layer

    def spec(self) -> dict[str, Any]:
        return {"in_features": self.in_features, "out_features": self.out_features,
                "bias": self.bias is not None, "per_channel": self.per_channel}

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> "Int8StaticLinear":
        return cls(int(spec["in_features"]), int(spec["out_features"]), bool(spec["bias"]), bool(spec["per_channel"]))

    def slimkit_weights(self) -> dict[str, torch.Tensor]:
        return {"weight": self.weight_int8, **({"bias": self.bias} if self.bias is not None else {})}

    def dequantized_weight(self) -> torch.Tensor:
        return self.weight_int8.float() * self.weight_scale.reshape(-1, 1)

    def _pack(self) -> tuple[Any, float, int]:
        # (fbgemm prepacked weight + bias, input scale, input zero point). torch >= 2.10 deprecates
        # quantized-tensor constructors; they remain the only way into fbgemm, so the warning is
        # silenced here only.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            bias = self.bias.detach().float() if self.bias is not None else None
            packed = torch.ops.quantized.linear_prepack(_fbgemm_weight(self.weight_int8, self.weight_scale), bias)
        return packed, float(self.input_scale), int(self.input_zero_point)

    def _fbgemm(self, x2: torch.Tensor) -> torch.Tensor:
        packed, scale, zero = self.packed()
        return self._qlinear(x2, scale, zero, packed)

    def _qlinear(self, x2: torch.Tensor, scale: float, zero: int, packed: Any) -> torch.Tensor:
        """uint8(x2; scale, zero) x int8 weight + bias -> fp32: fbgemm's integer kernel, or where it
        saturates (no VNNI) the same integer math in float32 (the runtime label says which)."""
        if fbgemm_u8s8_exact():
            return torch.ops.quantized.linear_with_input_q_dq_qweight_dq_output_fp32(x2, scale, zero, packed)
        xq = torch.fake_quantize_per_tensor_affine(x2, scale, zero, 0, 255)
        return nn.functional.linear(xq, Int8StaticLinear.dequantized_weight(self), self.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu":  # no int8 kernel: dequantized weights (reported by the runtime name)
            return nn.functional.linear(x, self.dequantized_weight().to(x), None if self.bias is None else self.bias.to(x))
        shape = x.shape
        out = self._fbgemm(x.reshape(-1, shape[-1]).float().contiguous())  # [tokens, out] fp32
        return out.reshape(*shape[:-1], self.out_features).to(x.dtype)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, per_channel={self.per_channel}"


_CONV_KEYS = ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "groups")


@register_module_kind("int8_static_conv2d")
class Int8StaticConv2d(_LazyPacked):
    """Conv2d on fbgemm/x86 ``quantized::conv2d``: quint8 activations (calibrated input and output
    ranges), int8 weights per output channel, int32 accumulation, dequantized fp32 output."""

    kernel = "torch int8 (fbgemm/x86 quantized::conv2d, static)"

    def __init__(self, in_channels: int, out_channels: int, kernel_size: tuple[int, int], stride: tuple[int, int],
                 padding: tuple[int, int], dilation: tuple[int, int], groups: int, per_channel: bool = True) -> None:
        super().__init__()
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.kernel_size, self.stride = tuple(kernel_size), tuple(stride)
        self.padding, self.dilation, self.per_channel = tuple(padding), tuple(dilation), per_channel
        shape = (out_channels, in_channels // groups, *self.kernel_size)
        self.register_buffer("weight_int8", torch.zeros(shape, dtype=torch.int8))
        self.register_buffer("weight_scale", torch.ones(out_channels if per_channel else 1))
        self.register_buffer("input_scale", torch.ones(1))
        self.register_buffer("input_zero_point", torch.zeros(1, dtype=torch.int32))
        self.register_buffer("output_scale", torch.ones(1))
        self.register_buffer("output_zero_point", torch.zeros(1, dtype=torch.int32))
        self.bias = nn.Parameter(torch.zeros(out_channels), requires_grad=False)

    @classmethod
    def from_float(cls, conv: nn.Conv2d, weight: torch.Tensor, bias: torch.Tensor | None, weight_scale: torch.Tensor,
                   input_qparams: tuple[torch.Tensor, torch.Tensor],
                   output_qparams: tuple[torch.Tensor, torch.Tensor]) -> "Int8StaticConv2d":
        """From a float conv with (possibly BN-folded) ``weight``/``bias`` and calibrated qparams."""
        layer = cls(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,  # type: ignore[arg-type]
                    conv.dilation, conv.groups, weight_scale.numel() > 1)  # type: ignore[arg-type]
        layer.weight_int8.copy_(quantize_weight(weight, weight_scale))
        layer.weight_scale.copy_(weight_scale)
        layer.input_scale.copy_(input_qparams[0].reshape(1))
        layer.input_zero_point.copy_(input_qparams[1].reshape(1))
        layer.output_scale.copy_(output_qparams[0].reshape(1))
        layer.output_zero_point.copy_(output_qparams[1].reshape(1))
        if bias is not None:
            layer.bias.data.copy_(bias.detach().float())
        return layer

    def spec(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in
                ((k, getattr(self, k)) for k in (*_CONV_KEYS, "per_channel"))}

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> "Int8StaticConv2d":
        return cls(int(spec["in_channels"]), int(spec["out_channels"]), tuple(spec["kernel_size"]), tuple(spec["stride"]),
                   tuple(spec["padding"]), tuple(spec["dilation"]), int(spec["groups"]), bool(spec["per_channel"]))

    def slimkit_weights(self) -> dict[str, torch.Tensor]:
        return {"weight": self.weight_int8, "bias": self.bias}

    def dequantized_weight(self) -> torch.Tensor:
        return self.weight_int8.float() * self.weight_scale.reshape(-1, 1, 1, 1)

    def _pack(self) -> tuple[Any, float, int, float, int]:
        # (fbgemm packed weight, input scale, input zero point, output scale, output zero point)
        # torch >= 2.10 deprecates quantized-tensor constructors; they remain the only way into
        # fbgemm's prepacked conv, so the warning is silenced here only.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            qw = _fbgemm_weight(self.weight_int8, self.weight_scale)
            packed = torch.ops.quantized.conv2d_prepack(qw, self.bias.detach().float(), list(self.stride),
                                                        list(self.padding), list(self.dilation), self.groups)
        return (packed, float(self.input_scale), int(self.input_zero_point), float(self.output_scale),
                int(self.output_zero_point))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu":
            return nn.functional.conv2d(x, self.dequantized_weight().to(x), self.bias.to(x), self.stride,
                                        self.padding, self.dilation, self.groups)
        if not fbgemm_u8s8_exact():  # the same integer math in float32 (reported by the runtime name)
            return self._emulated(x)
        packed, in_scale, in_zero, out_scale, out_zero = self.packed()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            qx = torch.quantize_per_tensor(x.float().contiguous(), in_scale, in_zero, torch.quint8)
            qy = torch.ops.quantized.conv2d(qx, packed, out_scale, out_zero)
            return qy.dequantize().to(x.dtype)

    def _emulated(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 input -> exact conv of the integer values -> uint8 output, in float32."""
        xq = torch.fake_quantize_per_tensor_affine(x.float(), float(self.input_scale), int(self.input_zero_point),
                                                   0, 255)
        y = nn.functional.conv2d(xq, self.dequantized_weight(), self.bias, self.stride, self.padding, self.dilation,
                                 self.groups)
        return torch.fake_quantize_per_tensor_affine(y, float(self.output_scale), int(self.output_zero_point),
                                                     0, 255).to(x.dtype)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, groups={self.groups}, per_channel={self.per_channel}")


def weight_scale(weight: torch.Tensor, observer: str, per_channel: bool, percentile: float = 99.99) -> torch.Tensor:
    """Symmetric int8 weight scale ([out] per channel, [1] per tensor) from a weight observer."""
    obs = make_observer(observer, 0 if per_channel else None, percentile=percentile)
    obs.update(weight)
    return qparams(*obs.range(), bits=8, symmetric=True)[0]


def folded_conv(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """A float Conv2d (with bias) computing ``bn(conv(x))`` in eval mode (see :func:`fold_batchnorm`)."""
    weight, bias = fold_batchnorm(conv, bn)
    folded = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,  # type: ignore[arg-type]
                       conv.dilation, conv.groups, bias=True, padding_mode=conv.padding_mode)  # type: ignore[arg-type]
    with torch.no_grad():
        folded.weight.copy_(weight)
        folded.bias.copy_(bias)
    return folded


class MeanInput:
    """Running mean of a layer's calibration inputs, for :func:`bias_correction`.

    Linear: the mean over every token ``[in_features]``. Conv2d: the mean image over the batch
    ``[C, H, W]`` (so the correction sees the zero padding at the borders, as the conv does); if
    calibration images differ in size it falls back to the per-channel mean ``[C, 1, 1]``.
    ``update`` has the ``Observer`` interface so :func:`observe_layers` can feed it.
    """

    def __init__(self) -> None:
        self.label: str | None = None
        self.total: torch.Tensor | None = None
        self.count = 0

    def update(self, x: torch.Tensor) -> None:
        x = x.detach().float()
        if x.dim() == 4:
            m, n = x.sum(0), x.shape[0]
            if self.total is not None and self.total.shape != m.shape:  # image sizes differ: per channel only
                self.total = self.total.sum((1, 2), keepdim=True) / (self.total.shape[1] * self.total.shape[2])
            if self.total is not None and self.total.shape[1:] == (1, 1):
                m = m.mean((1, 2), keepdim=True)
        else:
            flat = x.reshape(-1, x.shape[-1])
            m, n = flat.sum(0), flat.shape[0]
        self.total = m if self.total is None else self.total + m
        self.count += n

    def range(self) -> tuple[torch.Tensor, torch.Tensor]:  # pragma: no cover - Observer protocol only
        raise NotImplementedError

    def mean(self) -> torch.Tensor:
        if self.total is None:
            raise DataError(f"bias correction: {self.label or 'a layer'} saw no calibration data")
        return self.total / self.count


def bias_correction(module: nn.Module, weight_q: torch.Tensor, mean_input: torch.Tensor) -> torch.Tensor:
    """Per-output-channel ``E[W x] - E[W_q x]`` over the calibration inputs (Nagel et al. 2019).

    Rounding a channel's weights shifts its expected output by ``(W - W_q) E[x]``; after a
    BatchNorm fold with a large scale (MobileNetV2's first depthwise conv) or with inputs of a
    large mean (after a ReLU), that shift dominates the quantization error. Adding it to the bias
    removes the systematic part; the product is linear, so the mean input gives it exactly.
    """
    dw = module.weight.detach().float() - weight_q
    if isinstance(module, nn.Linear):
        return dw @ mean_input
    conv: nn.Conv2d = module  # type: ignore[assignment]
    x = mean_input.unsqueeze(0)
    if x.shape[-2:] == (1, 1):  # per-channel means only: the response inside the image (borders ignored)
        extent = [d * (k - 1) + 1 for d, k in zip(conv.dilation, conv.kernel_size)]
        x = x.expand(1, -1, *extent)
        return nn.functional.conv2d(x, dw, None, 1, 0, conv.dilation, conv.groups).reshape(-1)
    y = nn.functional.conv2d(x, dw, None, conv.stride, conv.padding, conv.dilation, conv.groups)
    return y.mean((0, 2, 3))


def static_layer(module: nn.Module, w_scale: torch.Tensor, obs_in: Observer, obs_out: Observer | None,
                 clamp: tuple[float, float] | None = None, mean_input: torch.Tensor | None = None) -> nn.Module:
    """The int8 layer for a calibrated Linear (input range) or Conv2d (input and output ranges).

    ``clamp``: the range a following ReLU / ReLU6 keeps, applied to the conv's output range.
    ``mean_input``: the layer's mean calibration input; when given, the bias is corrected by the
    expected output shift of the int8 weights (:func:`bias_correction`).
    """
    in_q = qparams(*obs_in.range(), symmetric=False)
    bias = module.bias
    if mean_input is not None:
        wq = quantize_weight(module.weight, w_scale).float() * w_scale.reshape(-1, *([1] * (module.weight.dim() - 1)))
        corr = bias_correction(module, wq, mean_input)
        bias = corr if bias is None else bias.detach().float() + corr
    if isinstance(module, nn.Linear):
        return Int8StaticLinear.from_linear(module, w_scale, in_q, bias=bias)
    lo, hi = obs_out.range()  # type: ignore[union-attr]
    if clamp is not None:  # a ReLU/ReLU6 follows: only [0, 6] (or [0, hi]) survives it
        lo, hi = lo.clamp(min=clamp[0]), hi.clamp(max=clamp[1])
    return Int8StaticConv2d.from_float(module, module.weight, bias, w_scale, in_q,  # type: ignore[arg-type]
                                       qparams(lo, hi, symmetric=False))


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
