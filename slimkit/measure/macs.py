"""Multiply-accumulate count of one forward pass, from PyTorch's FLOP counter.

``FlopCounterMode`` counts the matrix products of a real forward pass (mm, addmm, bmm,
convolution, attention) and reports 2 FLOPs per multiply-accumulate. It knows nothing about
the quantized linear and conv kernels that int8 layers call, so they are taught here: a
quantized linear or conv layer does the same multiply-accumulates as the float layer it replaces.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from slimkit.core.inputs import ModelInputs, call_model, move_inputs
from slimkit.core.modelstate import eval_mode, model_device

__all__ = ["count_macs"]

# Quantized linear kernels: argument 0 is the input [..., in_features], the output is
# [..., out_features]; the other arguments (packed weights, scales, flags) do not change the count.
_QUANTIZED_LINEAR_OPS = (
    "linear_dynamic",
    "linear_relu_dynamic",
    "linear_dynamic_fp16",
    "linear",
    "linear_relu",
    "linear_with_input_q_dq_qweight_dq_output_fp32",
)


# Quantized conv kernels: (quint8 input, prepacked weight, output scale, output zero point).
_QUANTIZED_CONV_OPS = ("conv1d", "conv2d", "conv2d_relu", "conv3d", "conv3d_relu", "conv2d_add", "conv2d_add_relu")


def count_macs(model: nn.Module, example_inputs: ModelInputs) -> int:
    """Multiply-accumulates of one forward pass of ``model`` on ``example_inputs``.

    Counts matrix products only (as FlopCounterMode does): element-wise ops, bias adds and
    normalisations are not counted. The model runs once under ``torch.no_grad()``, with the
    inputs moved to the model's device.
    """
    inputs = move_inputs(example_inputs, model_device(model))
    counter = FlopCounterMode(display=False, custom_mapping=_quantized_mapping())
    with eval_mode(model), torch.no_grad(), counter:
        call_model(model, inputs)
    return int(counter.get_total_flops()) // 2


def _quantized_linear_flops(input_shape: torch.Size, *args: Any, out_shape: Any = None, **kwargs: Any) -> int:
    """FLOPs (2 per MAC) of a quantized linear: rows x in_features x out_features, times 2.

    FlopCounterMode calls this with every tensor argument replaced by its shape and the output
    shape as ``out_shape``.
    """
    return 2 * math.prod(input_shape) * int(out_shape[-1])


def _int_mm_flops(a_shape: torch.Size, b_shape: torch.Size, *args: Any, out_shape: Any = None, **kwargs: Any) -> int:
    """``aten._int_mm`` (int8 [M, K] @ int8 [K, N] -> int32): 2·M·K·N, like a float mm."""
    return 2 * int(a_shape[0]) * int(a_shape[1]) * int(b_shape[1])


def _quantized_conv_flops(input_shape: Any, packed: Any, *args: Any, out_shape: Any = None, **kwargs: Any) -> int:
    """FLOPs (2 per MAC) of a quantized conv: every output element sums ``C_in / groups · kH · kW``
    products, as for the float conv.

    The weight lives inside the prepacked argument (a ``ConvPackedParams`` script object), so its
    shape ``[C_out, C_in / groups, kH, kW]`` is read back with ``unpack()``.
    """
    weight_shape = packed.unpack()[0].shape
    return 2 * math.prod(out_shape) * math.prod(weight_shape[1:])


def _quantized_mapping() -> dict[Any, Callable[..., int]]:
    """FLOP formulas for the quantized linear and conv ops this PyTorch build has."""
    mapping: dict[Any, Callable[..., int]] = {torch.ops.aten._int_mm: _int_mm_flops}
    for names, formula in ((_QUANTIZED_LINEAR_OPS, _quantized_linear_flops),
                           (_QUANTIZED_CONV_OPS, _quantized_conv_flops)):
        for name in names:
            try:
                packet = getattr(torch.ops.quantized, name)
            except (AttributeError, RuntimeError):
                continue
            mapping[packet] = formula
    return mapping
