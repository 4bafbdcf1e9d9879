"""Lowering slimkit's quantized layers to ONNX Runtime operators, from slimkit's own codes.

No re-quantization: every integer code, scale and zero point in the ONNX file is the one slimkit
stored. For the export, each quantized layer is swapped (temporarily, restored afterwards) for a
*stand-in* module that holds its tensors in the runtime's layout and calls one of the
``slimkit_onnx::*`` custom ops below; :func:`translation_table` tells
``torch.onnx.export(..., dynamo=True)`` which ONNX nodes each op becomes. The stand-ins' eager
forwards compute the same thing in torch from that layout (a reference the tests check against
the original layer, so a packing mistake shows up without ONNX Runtime).

Layer -> ONNX:

* ``WeightOnlyLinear`` (4 or 8 bits, any group size that is a multiple of 16 or per channel,
  symmetric or asymmetric, AWQ ``input_scale``) -> ``com.microsoft::MatMulNBits``. A group of
  ``g`` columns maps to blocks of ``b`` = the largest power of two dividing ``g`` (its scale and
  zero point repeated ``g / b`` times); a short last group (``K % g``) becomes a short last block.
* ``WeightOnlyEmbedding`` (4 or 8 bits) -> ``Gather`` of the packed rows + unpack + dequantize.
* ``Int8DynamicLinear``: ``per_token`` (slimkit's default) -> the same per-row symmetric int8
  activation quantization in ONNX ops, the codes shifted by 128 into uint8 (zero point 128, so the
  integer products are unchanged) + ``com.microsoft::MatMulIntegerToFloat`` (uint8 x int8 -> int32
  with the weight scale applied in the GEMM's epilogue; ORT's int8 x int8 kernel is ~20x slower
  than its uint8 x int8 one here) + per-row rescale;
  ``per_tensor`` -> ``DynamicQuantizeLinear`` (uint8, one range per call, as fbgemm) +
  ``MatMulIntegerToFloat``.
* ``Int8StaticLinear`` / ``Int8StaticConv2d`` / ``SmoothQuantLinear`` -> QDQ: ``QuantizeLinear`` /
  ``DequantizeLinear`` with slimkit's calibrated activation (scale, zero point) around the float op,
  int8 weights behind ``DequantizeLinear`` (per output channel), which ORT fuses into int8 kernels.

Layers with no lowering (binary/ternary, QAT int-weight, k-means clustered, static int8 graph-mode
regions) raise :class:`~slimkit.core.errors.UnsupportedModelError` naming the layer, unless the
caller asked for ``dequantize=True`` (an explicit fp32 export of their dequantized weights).
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, Callable

import torch
from torch import nn

from slimkit.core.errors import UnsupportedModelError
from slimkit.io.edits import replace_module
from slimkit.quantize.weight_only.core import pack_codes, unpack_codes

__all__ = ["lowered", "translation_table", "block_size_for", "pack_matmul_nbits", "lower_layer",
           "FLOAT_KINDS", "NBITS_BITS", "DEFAULT_ACCURACY_LEVEL"]

#: slimkit layer kinds that are plain float torch modules (exported as they are)
FLOAT_KINDS = frozenset({"identity", "linear", "low_rank_linear", "folded_batchnorm"})
#: weight bit widths MatMulNBits / the embedding gather take from slimkit's codes
NBITS_BITS = (4, 8)
#: MatMulNBits accuracy_level: 4 lets ORT quantize the activations to int8 per block (fast path)
DEFAULT_ACCURACY_LEVEL = 4
#: per-token int8 activation codes are fed to MatMulInteger as uint8 ``q + 128`` with zero point 128
_UINT8_SHIFT = 128.0


# ----------------------------------------------------------------------------- custom ops
@torch.library.custom_op("slimkit_onnx::matmul_nbits", mutates_args=())
def _matmul_nbits(x: torch.Tensor, b: torch.Tensor, scales: torch.Tensor, zero_points: torch.Tensor | None,
                  k: int, n: int, bits: int, block_size: int, accuracy_level: int) -> torch.Tensor:
    """Eager reference of MatMulNBits on the ORT layout: ``x @ dequant(B)^T``."""
    w = _dequant_nbits(b, scales, zero_points, k, n, bits, block_size)
    return x @ w.t()


@_matmul_nbits.register_fake
def _(x, b, scales, zero_points, k, n, bits, block_size, accuracy_level):  # noqa: ANN001, ANN202
    return x.new_empty(*x.shape[:-1], n)


@torch.library.custom_op("slimkit_onnx::matmul_integer", mutates_args=())
def _matmul_integer(a: torch.Tensor, b: torch.Tensor, a_zero_point: torch.Tensor | None) -> torch.Tensor:
    """``(a - a_zero_point) @ b`` in int32 (ONNX MatMulInteger)."""
    a32 = a.to(torch.int32) - (0 if a_zero_point is None else a_zero_point.to(torch.int32))
    return (a32.to(torch.float64) @ b.to(torch.float64)).to(torch.int32)


@_matmul_integer.register_fake
def _(a, b, a_zero_point):  # noqa: ANN001, ANN202
    return a.new_empty(*a.shape[:-1], b.shape[-1], dtype=torch.int32)


@torch.library.custom_op("slimkit_onnx::matmul_integer_to_float", mutates_args=())
def _matmul_integer_to_float(a: torch.Tensor, b: torch.Tensor, a_scale: torch.Tensor, b_scale: torch.Tensor,
                             a_zero_point: torch.Tensor) -> torch.Tensor:
    """``(a - a_zero_point) @ b * a_scale * b_scale`` in float (com.microsoft MatMulIntegerToFloat).

    ``a_scale`` is one scalar (ORT broadcasts no per-row scale here), ``b_scale`` per output column.
    """
    acc = _matmul_integer(a, b, a_zero_point)
    return acc.to(torch.float32) * (a_scale.float() * b_scale.float())


@_matmul_integer_to_float.register_fake
def _(a, b, a_scale, b_scale, a_zero_point):  # noqa: ANN001, ANN202
    return a.new_empty(*a.shape[:-1], b.shape[-1], dtype=torch.float32)


@torch.library.custom_op("slimkit_onnx::quantize_rows", mutates_args=())
def _quantize_rows(x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor) -> torch.Tensor:
    """ONNX QuantizeLinear per axis 0 to uint8: one (scale, zero point) per row of a 2-D ``x``."""
    q = torch.round(x / scale.unsqueeze(1)) + zero_point.unsqueeze(1).float()
    return q.clamp(0, 255).to(torch.uint8)


@_quantize_rows.register_fake
def _(x, scale, zero_point):  # noqa: ANN001, ANN202
    return x.new_empty(x.shape, dtype=torch.uint8)


@torch.library.custom_op("slimkit_onnx::dynamic_quantize_linear", mutates_args=())
def _dynamic_quantize_linear(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """ONNX DynamicQuantizeLinear: uint8 codes, scale and zero point from the range of ``x`` (with 0)."""
    lo, hi = float(x.min().clamp(max=0.0)), float(x.max().clamp(min=0.0))
    scale = torch.tensor((hi - lo) / 255.0 if hi > lo else 1.0, dtype=torch.float32)
    zero = torch.round(torch.tensor(-lo) / scale).clamp(0, 255).to(torch.uint8)
    q = torch.clamp(torch.round(x / scale) + zero.float(), 0, 255).to(torch.uint8)
    return q, scale, zero


@_dynamic_quantize_linear.register_fake
def _(x):  # noqa: ANN001, ANN202
    return (x.new_empty(x.shape, dtype=torch.uint8), x.new_empty((), dtype=torch.float32),
            x.new_empty((), dtype=torch.uint8))


@torch.library.custom_op("slimkit_onnx::quantize_dequantize", mutates_args=())
def _quantize_dequantize(x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor) -> torch.Tensor:
    """QuantizeLinear -> DequantizeLinear with a per-tensor (scale, uint8 zero point)."""
    z = zero_point.float()
    return (torch.clamp(torch.round(x / scale) + z, 0, 255) - z) * scale


@_quantize_dequantize.register_fake
def _(x, scale, zero_point):  # noqa: ANN001, ANN202
    return torch.empty_like(x)


@torch.library.custom_op("slimkit_onnx::dequantize_linear", mutates_args=())
def _dequantize_linear(q: torch.Tensor, scale: torch.Tensor, axis: int) -> torch.Tensor:
    """DequantizeLinear of a symmetric int8/int32 tensor (zero point 0), per ``axis`` channel."""
    shape = [1] * q.dim()
    shape[axis] = -1
    return q.to(torch.float32) * scale.reshape(shape)


@_dequantize_linear.register_fake
def _(q, scale, axis):  # noqa: ANN001, ANN202
    return q.new_empty(q.shape, dtype=torch.float32)


def _dequant_nbits(b: torch.Tensor, scales: torch.Tensor, zero_points: torch.Tensor | None, k: int, n: int,
                   bits: int, block_size: int) -> torch.Tensor:
    """Float weight [N, K] from the MatMulNBits layout (inverse of :func:`pack_matmul_nbits`)."""
    k_blocks = b.shape[1]
    codes = unpack_codes(b.reshape(n, -1), bits, k_blocks * block_size).float()
    s = scales.reshape(n, k_blocks).float()
    if zero_points is None:
        z = torch.full_like(s, float(2 ** (bits - 1)))
    else:
        z = unpack_codes(zero_points.reshape(n, -1), bits, k_blocks).float()
    w = (codes.reshape(n, k_blocks, block_size) - z.unsqueeze(-1)) * s.unsqueeze(-1)
    return w.reshape(n, -1)[:, :k]


# ----------------------------------------------------------------------------- ONNX translations
def _msft_op(name: str, inputs: list[tuple[str, str, bool]], constraints: list[tuple[str, list[str]]],
             attributes: tuple[str, ...]) -> Any:
    """An onnxscript op of the ``com.microsoft`` domain with a locally built schema (not registered globally)."""
    import onnxscript
    from onnx.defs import OpSchema

    opt = OpSchema.FormalParameterOption
    params = [OpSchema.FormalParameter(n, t, param_option=opt.Optional if optional else opt.Single)
              for n, t, optional in inputs]
    schema = OpSchema(name, "com.microsoft", 1, inputs=params, outputs=[OpSchema.FormalParameter("Y", "T1")],
                      type_constraints=[(t, allowed, "") for t, allowed in constraints],
                      attributes=[OpSchema.Attribute(a, OpSchema.AttrType.INT, "") for a in attributes])
    return onnxscript.values.Op(onnxscript.values.Opset("com.microsoft", 1), name, schema)


def translation_table() -> dict[Any, Callable[..., Any]]:
    """``custom_translation_table`` for ``torch.onnx.export(dynamo=True)``: slimkit_onnx ops -> ONNX nodes."""
    from onnxscript import opset18 as op

    matmul_nbits = _msft_op(
        "MatMulNBits",
        [("A", "T1", False), ("B", "T2", False), ("scales", "T1", False), ("zero_points", "T3", True),
         ("g_idx", "T4", True), ("bias", "T1", True)],
        [("T1", ["tensor(float)", "tensor(float16)"]), ("T2", ["tensor(uint8)"]),
         ("T3", ["tensor(uint8)", "tensor(float)", "tensor(float16)"]), ("T4", ["tensor(int32)"])],
        ("K", "N", "bits", "block_size", "accuracy_level"))

    def t_matmul_nbits(x, b, scales, zero_points, k: int, n: int, bits: int, block_size: int,  # noqa: ANN001, ANN202
                       accuracy_level: int):
        attrs = {"K": k, "N": n, "bits": bits, "block_size": block_size, "accuracy_level": accuracy_level}
        if zero_points is None:
            return matmul_nbits(x, b, scales, **attrs)
        return matmul_nbits(x, b, scales, zero_points, **attrs)

    def t_matmul_integer(a, b, a_zero_point):  # noqa: ANN001, ANN202
        return op.MatMulInteger(a, b) if a_zero_point is None else op.MatMulInteger(a, b, a_zero_point)

    matmul_integer_to_float = _msft_op(
        "MatMulIntegerToFloat",
        [("A", "TA", False), ("B", "TB", False), ("a_scale", "T1", False), ("b_scale", "T1", False),
         ("a_zero_point", "TA", True), ("b_zero_point", "TB", True), ("bias", "T1", True)],
        [("TA", ["tensor(uint8)", "tensor(int8)"]), ("TB", ["tensor(uint8)", "tensor(int8)"]),
         ("T1", ["tensor(float)", "tensor(float16)"])], ())

    def t_matmul_integer_to_float(a, b, a_scale, b_scale, a_zero_point):  # noqa: ANN001, ANN202
        return matmul_integer_to_float(a, b, a_scale, b_scale, a_zero_point)

    def t_quantize_rows(x, scale, zero_point):  # noqa: ANN001, ANN202
        return op.QuantizeLinear(x, scale, zero_point, axis=0)

    def t_dynamic_quantize_linear(x):  # noqa: ANN001, ANN202
        return op.DynamicQuantizeLinear(x)

    def t_quantize_dequantize(x, scale, zero_point):  # noqa: ANN001, ANN202
        return op.DequantizeLinear(op.QuantizeLinear(x, scale, zero_point), scale, zero_point)

    def t_dequantize_linear(q, scale, axis: int):  # noqa: ANN001, ANN202
        return op.DequantizeLinear(q, scale, axis=axis)

    ops = torch.ops.slimkit_onnx
    return {ops.matmul_nbits.default: t_matmul_nbits, ops.matmul_integer.default: t_matmul_integer,
            ops.matmul_integer_to_float.default: t_matmul_integer_to_float,
            ops.quantize_rows.default: t_quantize_rows,
            ops.dynamic_quantize_linear.default: t_dynamic_quantize_linear,
            ops.quantize_dequantize.default: t_quantize_dequantize,
            ops.dequantize_linear.default: t_dequantize_linear}


# ----------------------------------------------------------------------------- MatMulNBits packing
def block_size_for(group_size: int | None, in_features: int, layer: str) -> int:
    """The MatMulNBits block size for slimkit's ``group_size`` (raises if none maps exactly).

    Blocks must be powers of two >= 16. A group of ``g`` columns is cut into blocks of the largest
    power of two dividing ``g`` (each block repeats the group's scale and zero point); a per-channel
    layer (``group_size=None``) uses blocks of up to 128 columns with the row's scale repeated.
    """
    if group_size is None:
        block = 16
        while block < min(in_features, 128):
            block *= 2
        return block
    block = group_size & -group_size
    if block < 16:
        raise UnsupportedModelError(
            f"layer {layer!r}: weight-only group size {group_size} cannot map to ONNX Runtime's MatMulNBits "
            "(block sizes are powers of two >= 16: 16, 32, 64, 128, 256, ...; a group size must be a multiple "
            "of 16, or per channel); re-quantize with such a group size or export with dequantize=True")
    return block


def pack_matmul_nbits(layer: nn.Module, name: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, int]:
    """``(B uint8 [N, k_blocks, block*bits/8], scales float32 [N * k_blocks], zero_points | None, block)``.

    From a ``WeightOnlyLinear``'s stored codes, fp16 scales and zeros; zero points (asymmetric
    only) are packed ``bits`` wide along the blocks, low bits first, as ORT reads them
    ([N, ceil(k_blocks * bits / 8)]); symmetric layers omit them (ORT's default ``2**(bits-1)`` is
    slimkit's implied symmetric zero point).
    """
    if layer.bits not in NBITS_BITS:
        raise UnsupportedModelError(f"layer {name!r}: {layer.bits}-bit weight-only codes have no MatMulNBits lowering "
                                    f"here (supported bits: {list(NBITS_BITS)}); export with dequantize=True")
    n, k, bits = layer.out_features, layer.in_features, layer.bits
    block = block_size_for(layer.group_size, k, name)
    k_blocks = -(-k // block)
    reps = k_blocks if layer.group_size is None else layer.group_size // block
    scales = layer.scales.float().repeat_interleave(reps, dim=1)[:, :k_blocks]
    zeros = layer.zero_points().to(torch.uint8).repeat_interleave(reps, dim=1)[:, :k_blocks]
    codes = layer.codes()
    pad = k_blocks * block - k
    if pad:  # padding codes dequantize to 0 (never read: ORT uses only K columns)
        pad_codes = zeros[:, -1:].expand(n, pad)
        codes = torch.cat([codes, pad_codes], dim=1)
    b = pack_codes(codes, bits).reshape(n, k_blocks, block * bits // 8).contiguous()
    zp = None if layer.symmetric else pack_codes(zeros, bits).contiguous()
    return b, scales.reshape(-1).contiguous(), zp, block


# ----------------------------------------------------------------------------- stand-ins
class NBitsLinear(nn.Module):
    """Stand-in for ``WeightOnlyLinear``: (AWQ input scale) -> MatMulNBits -> + bias."""

    def __init__(self, layer: nn.Module, name: str, accuracy_level: int = DEFAULT_ACCURACY_LEVEL) -> None:
        super().__init__()
        b, scales, zp, block = pack_matmul_nbits(layer, name)
        self.k, self.n, self.bits, self.block, self.accuracy_level = (layer.in_features, layer.out_features,
                                                                      layer.bits, block, accuracy_level)
        self.register_buffer("b", b)
        self.register_buffer("scales", scales)
        self.register_buffer("zero_points", zp)
        self.register_buffer("input_scale", None if layer.input_scale is None else layer.input_scale.float().clone())
        self.register_buffer("bias", None if layer.bias is None else layer.bias.detach().float().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float()
        if self.input_scale is not None:
            x = x * self.input_scale
        y = _matmul_nbits(x, self.b, self.scales, self.zero_points, self.k, self.n, self.bits, self.block,
                          self.accuracy_level)
        return y + self.bias if self.bias is not None else y


class PackedEmbedding(nn.Module):
    """Stand-in for ``WeightOnlyEmbedding``: Gather packed rows + their scales/zeros, unpack, dequantize."""

    def __init__(self, layer: nn.Module, name: str) -> None:
        super().__init__()
        if layer.bits not in NBITS_BITS:
            raise UnsupportedModelError(f"layer {name!r}: {layer.bits}-bit embedding codes have no ONNX lowering here "
                                        f"(supported bits: {list(NBITS_BITS)}); export with dequantize=True")
        self.bits, self.dim = layer.bits, layer.embedding_dim
        self.group = layer.embedding_dim if layer.group_size is None else layer.group_size
        groups = layer.scales.shape[1]
        codes = layer.codes()
        pad = groups * self.group - self.dim
        zeros = layer.zero_points().to(torch.uint8)
        if pad:
            codes = torch.cat([codes, zeros[:, -1:].expand(-1, pad)], dim=1)
        self.register_buffer("packed", pack_codes(codes, self.bits).contiguous())
        self.register_buffer("scales", layer.scales.clone())  # fp16, cast in the graph
        self.register_buffer("zeros", None if layer.symmetric else zeros.contiguous())

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        rows = self.packed[ids]
        if self.bits == 4:
            rows = torch.stack((rows & 15, rows >> 4), dim=-1).flatten(-2)
        groups = self.scales.shape[1]
        codes = rows.float().reshape(*ids.shape, groups, self.group)
        scale = self.scales[ids].float().unsqueeze(-1)
        if self.zeros is None:
            w = (codes - float(2 ** (self.bits - 1))) * scale
        else:
            w = (codes - self.zeros[ids].float().unsqueeze(-1)) * scale
        return w.flatten(-2)[..., :self.dim]


class DynamicInt8Linear(nn.Module):
    """Stand-in for ``Int8DynamicLinear`` (and SmoothQuant per-token): int8 activations at run time + MatMulInteger."""

    def __init__(self, weight_int8: torch.Tensor, weight_scale: torch.Tensor, bias: torch.Tensor | None,
                 activations: str, inv_smooth: torch.Tensor | None = None) -> None:
        super().__init__()
        self.activations = activations
        self.register_buffer("weight_t", weight_int8.t().contiguous())  # int8 [K, N]
        self.register_buffer("weight_scale", weight_scale.float().reshape(-1).clone())
        self.register_buffer("bias", None if bias is None else bias.detach().float().clone())
        self.register_buffer("inv_smooth", inv_smooth)
        per_token = activations == "per_token"
        self.register_buffer("shift_zero_point", torch.tensor(int(_UINT8_SHIFT), dtype=torch.uint8) if per_token else None)
        self.register_buffer("unit_scale", torch.tensor(1.0) if per_token else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float()
        if self.inv_smooth is not None:
            x = x * self.inv_smooth
        if self.activations == "per_token":  # slimkit's per-row symmetric int8 (Int8DynamicLinear._per_token)
            return self._per_token(x)
        else:  # one uint8 range per call (fbgemm quantized::linear_dynamic, reduce_range off)
            xq, s_x, zero = _dynamic_quantize_linear(x)
            y = _matmul_integer_to_float(xq, self.weight_t, s_x, self.weight_scale, zero)
        return y + self.bias if self.bias is not None else y

    def _per_token(self, x: torch.Tensor) -> torch.Tensor:
        """Per-row symmetric int8 codes, fed as uint8 ``q + 128`` with zero point 128.

        ``(q + 128) - 128 = q``, so the integer products are slimkit's; ORT's uint8 x int8 GEMM runs
        on its fast (VNNI) kernel, its int8 x int8 one is ~20x slower here. One per-axis
        ``QuantizeLinear`` (divide, round, + 128, saturate) replaces four elementwise passes; it
        divides by the scale where slimkit multiplies by its reciprocal, so a code can differ by
        one where ``x / s`` lies within a float rounding error of a half.
        """
        shape = x.shape
        x2 = x.reshape(-1, shape[-1])
        s_x = (x2.abs().amax(dim=-1) / 127.0).clamp_min(1e-12)  # [rows]
        zero = torch.full_like(s_x, _UINT8_SHIFT, dtype=torch.uint8)
        xq = _quantize_rows(x2, s_x, zero)
        # integer GEMM with the per-column weight scale in its epilogue; the per-row activation
        # scale after it (MatMulIntegerToFloat takes only a scalar a_scale)
        y = _matmul_integer_to_float(xq, self.weight_t, self.unit_scale, self.weight_scale, self.shift_zero_point)
        y = y * s_x.unsqueeze(1)
        y = y + self.bias if self.bias is not None else y
        return y.reshape(*shape[:-1], y.shape[-1])


class StaticInt8Linear(nn.Module):
    """Stand-in for ``Int8StaticLinear`` / static ``SmoothQuantLinear``: Q/DQ input, DQ int8 weight, MatMul."""

    def __init__(self, layer: nn.Module, inv_smooth: torch.Tensor | None = None) -> None:
        super().__init__()
        self.register_buffer("weight_t", layer.weight_int8.t().contiguous())  # int8 [K, N]
        self.register_buffer("weight_scale", layer.weight_scale.float().reshape(-1).clone())
        self.register_buffer("input_scale", layer.input_scale.float().reshape(()).clone())
        self.register_buffer("input_zero_point", layer.input_zero_point.to(torch.uint8).reshape(()).clone())
        self.register_buffer("bias", None if layer.bias is None else layer.bias.detach().float().clone())
        self.register_buffer("inv_smooth", inv_smooth)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float()
        if self.inv_smooth is not None:
            x = x * self.inv_smooth
        xq = _quantize_dequantize(x, self.input_scale, self.input_zero_point)
        axis = 1 if self.weight_scale.numel() > 1 else 0
        scale = self.weight_scale if axis == 1 else self.weight_scale.reshape(())
        y = xq @ _dequantize_linear(self.weight_t, scale, axis)
        return y + self.bias if self.bias is not None else y


class StaticInt8Conv2d(nn.Module):
    """Stand-in for ``Int8StaticConv2d``: Q/DQ input, DQ int8 weight (+ int32 bias), Conv, Q/DQ output.

    The bias is stored as int32 in units of ``input_scale * weight_scale`` (what ORT's QDQ Conv
    fusion needs to run ``QLinearConv``); it differs from the float bias by at most half a unit.
    """

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.stride, self.padding = tuple(layer.stride), tuple(layer.padding)
        self.dilation, self.groups = tuple(layer.dilation), layer.groups
        w_scale = layer.weight_scale.float().reshape(-1).expand(layer.out_channels).clone()
        self.register_buffer("weight_int8", layer.weight_int8.clone())
        self.register_buffer("weight_scale", w_scale)
        bias_scale = (layer.input_scale.float().reshape(()) * w_scale).clone()
        self.register_buffer("bias_int32", torch.round(layer.bias.detach().float() / bias_scale).to(torch.int32))
        self.register_buffer("bias_scale", bias_scale)
        for key in ("input_scale", "output_scale"):
            self.register_buffer(key, getattr(layer, key).float().reshape(()).clone())
        for key in ("input_zero_point", "output_zero_point"):
            self.register_buffer(key, getattr(layer, key).to(torch.uint8).reshape(()).clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xq = _quantize_dequantize(x.float(), self.input_scale, self.input_zero_point)
        w = _dequantize_linear(self.weight_int8, self.weight_scale, 0)
        b = _dequantize_linear(self.bias_int32, self.bias_scale, 0)
        y = nn.functional.conv2d(xq, w, b, self.stride, self.padding, self.dilation, self.groups)
        return _quantize_dequantize(y, self.output_scale, self.output_zero_point)


# ----------------------------------------------------------------------------- layer dispatch
def _float_linear(weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Linear:
    out = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    with torch.no_grad():
        out.weight.copy_(weight)
        if bias is not None:
            out.bias.copy_(bias.detach().float())
    return out.eval()


def _float_conv(module: nn.Module, weight: torch.Tensor, bias: torch.Tensor | None, conv: dict[str, Any]) -> nn.Conv2d:
    out = nn.Conv2d(weight.shape[1] * conv["groups"], weight.shape[0], tuple(weight.shape[2:]),  # type: ignore[arg-type]
                    tuple(conv["stride"]), tuple(conv["padding"]), tuple(conv["dilation"]), conv["groups"],
                    bias=bias is not None)
    with torch.no_grad():
        out.weight.copy_(weight)
        if bias is not None:
            out.bias.copy_(bias.detach().float())
    return out.eval()


def _dequantized(module: nn.Module, name: str) -> nn.Module:
    """The float layer computing ``module``'s dequantized weights (``dequantize=True`` exports)."""
    kind = getattr(module, "slimkit_kind", "")
    if kind == "weight_only_linear":
        w = module.dequantize()
        if module.input_scale is not None:
            w = w * module.input_scale.reshape(1, -1)
        return _float_linear(w, module.bias)
    if kind == "weight_only_embedding":
        return nn.Embedding.from_pretrained(module.dequantize(), freeze=True)
    if kind == "clustered_linear":
        return _float_linear(module.weight().detach(), module.bias)
    if kind in ("int8_static_conv2d",):
        conv = {"stride": module.stride, "padding": module.padding, "dilation": module.dilation, "groups": module.groups}
        return _float_conv(module, module.dequantized_weight(), module.bias, conv)
    if kind in ("lowbit_weight_layer", "int_weight_layer") and module.op == "conv2d":
        return _float_conv(module, module.dequantized_weight(), module.bias, module.conv)
    if hasattr(module, "dequantized_weight") and kind not in ("int8_qconv2d", "int8_qlinear"):
        return _float_linear(module.dequantized_weight(), module.bias)
    raise UnsupportedModelError(f"layer {name!r} ({type(module).__name__}) cannot be dequantized for export")


def lower_layer(module: nn.Module, name: str, accuracy_level: int = DEFAULT_ACCURACY_LEVEL) -> tuple[nn.Module, str]:
    """``(stand-in, how)`` for one slimkit quantized layer; raises for a layer with no lowering."""
    kind = getattr(module, "slimkit_kind", "")
    if kind == "weight_only_linear":
        return (NBitsLinear(module, name, accuracy_level),
                f"MatMulNBits int{module.bits} group {module.group_size} "
                f"{'symmetric' if module.symmetric else 'asymmetric'}")
    if kind == "weight_only_embedding":
        return PackedEmbedding(module, name), f"Gather packed int{module.bits} rows + dequantize"
    if kind == "int8_dynamic_linear":
        return (DynamicInt8Linear(module.weight_int8, module.weight_scale, module.bias, module.activations),
                f"MatMulInteger int8, {module.activations} activations")
    if kind == "smoothquant_linear":
        inv = module.smooth.float().reciprocal().clone()
        if module.activations == "static":
            return StaticInt8Linear(module, inv), "QDQ int8 MatMul (SmoothQuant, static activations)"
        return (DynamicInt8Linear(module.weight_int8, module.weight_scale, module.bias, "per_token", inv),
                "MatMulInteger int8 (SmoothQuant, per_token activations)")
    if kind == "int8_static_linear":
        return StaticInt8Linear(module), "QDQ int8 MatMul (static activations)"
    if kind == "int8_static_conv2d":
        return StaticInt8Conv2d(module), "QDQ int8 Conv (static activations)"
    hint = ("re-run static_int8 with graph: off (per-layer int8 layers export as QDQ)"
            if kind in ("int8_qconv2d", "int8_qlinear") else "export with dequantize=True for an fp32 export")
    raise UnsupportedModelError(f"layer {name!r} ({type(module).__name__}, kind {kind!r}) has no ONNX lowering; {hint}")


def _quantized_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Top-most slimkit layers that are not plain float modules, in module order."""
    found: list[tuple[str, nn.Module]] = []
    for name, module in model.named_modules():
        if any(name.startswith(prefix + ".") for prefix, _ in found):
            continue
        kind = getattr(module, "slimkit_kind", None)
        if kind is not None and kind not in FLOAT_KINDS:
            found.append((name, module))
    return found


@contextlib.contextmanager
def lowered(model: nn.Module, *, dequantize: bool = False,
            accuracy_level: int = DEFAULT_ACCURACY_LEVEL) -> Iterator[dict[str, str]]:
    """Swap every quantized layer of ``model`` for its ONNX stand-in for the duration of the block.

    Yields ``{layer name: how it was lowered}``. ``dequantize=True`` swaps in float layers with
    the dequantized weights instead. The original layers are put back on exit (also on error).
    Graph-mode static int8 regions cannot be exported either way.
    """
    swaps: list[tuple[str, nn.Module, nn.Module]] = []
    plan: dict[str, str] = {}
    try:
        for name, module in _quantized_layers(model):
            if dequantize and getattr(module, "slimkit_kind", "") not in ("int8_qconv2d", "int8_qlinear"):
                new, how = _dequantized(module, name), "dequantized to fp32 (dequantize=True)"
            else:
                new, how = lower_layer(module, name, accuracy_level)
            swaps.append((name, module, new))
            plan[name] = how
        for name, _, new in swaps:
            replace_module(model, name, new)
        yield plan
    finally:
        for name, original, _ in reversed(swaps):
            replace_module(model, name, original)
