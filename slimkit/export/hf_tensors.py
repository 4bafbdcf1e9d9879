"""Tensors of slimkit's own layers in a form plain ``transformers`` loads (used by :mod:`slimkit.export.hf`).

Two forms exist:

* **float**: the layer's effective float weight (and bias), as a stock ``nn.Linear`` /
  ``nn.Embedding`` / ``nn.Conv2d`` holds it: weight-only codes dequantized (AWQ's input scale folded
  into the columns), int8 / binary / QAT / clustered weights dequantized, a low-rank pair multiplied
  back (``B @ A``). Used when the user asks for ``dequantize=True``.
* **compressed-tensors ``pack-quantized``** for slimkit's weight-only Linear layers
  (:class:`~slimkit.quantize.weight_only.layer.WeightOnlyLinear`): slimkit's own codes repacked,
  nothing re-quantized. compressed-tensors stores signed codes ``q = u - 2**(bits-1)`` eight
  (int4) or four (int8) to an int32 along the input dimension (first code in the lowest bits),
  ``weight_scale`` [N, G] and ``weight_shape`` [N, K]; it dequantizes ``q · s``, which is slimkit's
  symmetric ``(u - 2**(bits-1)) · s``. Asymmetric layers are refused: compressed-tensors 0.20's
  loader in transformers 5 allocates unpacked zero points [N, G] but unpacks packed int32 ones, so
  no zero-point layout loads. Scales are written as float32 holding slimkit's fp16 values exactly, so the
  weights transformers rebuilds are bit-identical to slimkit's dequantized weights (fp16 scales
  would make compressed-tensors dequantize in fp16).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from slimkit.core.errors import UnsupportedModelError

__all__ = ["float_tensors", "ct_tensors", "ct_scheme_key", "pack_int32", "is_slimkit_layer", "DEQUANTIZE_HINT",
           "CT_BITS"]

#: code widths whose codes pack whole into int32 words (compressed-tensors' dense packing is then the classic one)
CT_BITS = (2, 4, 8)
DEQUANTIZE_HINT = "pass dequantize=True (CLI: --dequantize) to write its dequantized float weights"


def is_slimkit_layer(module: nn.Module) -> bool:
    """True for a layer class slimkit swapped in, other than a plain ``nn.Linear`` of a new shape."""
    cls = type(module)
    if cls.__module__.split(".")[0] != "slimkit":
        return False
    return not (issubclass(cls, nn.Linear) and type(module).forward is nn.Linear.forward)


@dataclass
class FloatLayer:
    """A layer's float form: ``weight`` (and ``bias``) as the stock module holds them."""

    weight: torch.Tensor
    bias: torch.Tensor | None


def _weight_only_float(module: nn.Module) -> torch.Tensor:
    w = module.dequantize()
    scale = getattr(module, "input_scale", None)
    return w if scale is None else w * scale.float().reshape(1, -1)  # forward computes (x · s) W^T


def float_tensors(name: str, module: nn.Module) -> FloatLayer:
    """The float weight/bias that computes what ``module`` computes (with its quantized weights).

    Raises :class:`UnsupportedModelError` naming ``name`` for a layer with no float form (a folded
    Identity, an int8 graph layer).
    """
    from slimkit.lowrank.svd.core import LowRankLinear
    from slimkit.quantize.weight_only.layer import WeightOnlyEmbedding, WeightOnlyLinear

    bias = getattr(module, "bias", None)
    bias = bias.detach() if isinstance(bias, torch.Tensor) else None
    if isinstance(module, WeightOnlyLinear):
        return FloatLayer(_weight_only_float(module), bias)
    if isinstance(module, WeightOnlyEmbedding):
        return FloatLayer(module.dequantize(), None)
    if isinstance(module, LowRankLinear):
        w = module.second.weight.detach().double() @ module.first.weight.detach().double()
        b = module.second.bias
        return FloatLayer(w.to(module.second.weight.dtype), None if b is None else b.detach())
    logical = getattr(module, "slimkit_logical_weights", None)
    if callable(logical):  # k-means clustered Linear: codebook[indices]
        return FloatLayer(logical()["weight"].detach(), bias)
    deq = getattr(module, "dequantized_weight", None)
    if callable(deq):  # int8 dynamic / static / SmoothQuant, binary / ternary, QAT integer layers
        return FloatLayer(deq().detach(), bias)
    raise UnsupportedModelError(
        f"{name}: slimkit layer {type(module).__name__} has no float form a stock transformers checkpoint can hold "
        "(a layer folded away by merge_layers or an int8 graph layer); export it with format='onnx'")


def ct_scheme_key(name: str, module: nn.Module, stock: nn.Module) -> tuple[int, int | None, bool]:
    """``(bits, group_size, symmetric)`` of a weight-only Linear that compressed-tensors can hold as is.

    Raises :class:`UnsupportedModelError` naming the layer and the limit otherwise.
    """
    from slimkit.quantize.weight_only.layer import WeightOnlyLinear

    if not isinstance(module, WeightOnlyLinear):
        raise UnsupportedModelError(
            f"{name}: {type(module).__name__} has no transformers-loadable quantized form (only slimkit's weight-only "
            f"Linear layers export as compressed-tensors pack-quantized); {DEQUANTIZE_HINT}")
    if type(stock) is not nn.Linear:
        raise UnsupportedModelError(
            f"{name}: the stock model has a {type(stock).__name__} here, which compressed-tensors does not quantize "
            f"(it targets nn.Linear); {DEQUANTIZE_HINT}")
    if module.bits not in CT_BITS:
        raise UnsupportedModelError(f"{name}: int{module.bits} codes do not pack whole into int32 words "
                                    f"(bits {CT_BITS} do); {DEQUANTIZE_HINT}")
    if module.group_size is not None and module.in_features % module.group_size:
        raise UnsupportedModelError(
            f"{name}: group_size {module.group_size} does not divide the input width {module.in_features} "
            f"(compressed-tensors groups are whole); {DEQUANTIZE_HINT}")
    if not module.symmetric:
        raise UnsupportedModelError(
            f"{name}: asymmetric codes (zero points) are not exported as compressed-tensors: its loader "
            "(compressed-tensors 0.20 with transformers 5) expects unpacked zero points where it unpacks packed "
            f"ones, so the checkpoint would not load; quantize with symmetric: true, or {DEQUANTIZE_HINT}")
    if module.input_scale is not None:
        raise UnsupportedModelError(
            f"{name}: AWQ input scale (x · s before the quantized weight) has no place in compressed-tensors' "
            f"pack-quantized layout; {DEQUANTIZE_HINT}")
    return module.bits, module.group_size, module.symmetric


def pack_int32(values: torch.Tensor, bits: int) -> torch.Tensor:
    """Signed codes [R, C] (in ``[-2**(bits-1), 2**(bits-1))``) -> int32 words [R, ceil(C*bits/32)], 32/bits
    codes per word, the first in the lowest bits (compressed-tensors' ``pack_to_int32`` layout)."""
    if bits not in CT_BITS:
        raise ValueError(f"bits {bits} do not pack whole into int32 words; valid: {CT_BITS}")
    per = 32 // bits
    u = (values.to(torch.int64) + (1 << (bits - 1))) & ((1 << bits) - 1)
    pad = (-u.shape[1]) % per
    u = nn.functional.pad(u, (0, pad)).reshape(u.shape[0], -1, per)
    shifts = torch.arange(per, dtype=torch.int64) * bits
    words = (u << shifts).sum(dim=-1)
    words = torch.where(words >= 2 ** 31, words - 2 ** 32, words).to(torch.int32)
    return words.contiguous()


def ct_tensors(module: nn.Module) -> dict[str, torch.Tensor]:
    """``weight_packed`` / ``weight_scale`` / ``weight_shape`` (+ ``bias``) of a symmetric
    weight-only Linear, from slimkit's codes and scales (no re-quantization)."""
    offset = 1 << (module.bits - 1)
    codes = module.codes().to(torch.int32) - offset
    out = {
        "weight_packed": pack_int32(codes, module.bits),
        "weight_scale": module.scales.float().contiguous(),
        "weight_shape": torch.tensor([module.out_features, module.in_features], dtype=torch.int64),
    }
    if module.bias is not None:
        out["bias"] = module.bias.detach().float()
    return out
