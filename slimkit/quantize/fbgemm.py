"""Whether fbgemm's uint8 x int8 kernels compute exactly on this CPU.

On x86 CPUs without VNNI (AVX2 only), fbgemm multiplies uint8 activations by int8 weights with
``vpmaddubsw``, which adds each pair of products into a *saturating* int16: 255 x 127 x 2 = 64770
does not fit, so a layer whose inputs use the upper half of the uint8 range silently loses
accuracy (measured here: 16.6 dB SQNR on a two-layer MLP that gets 32-35 dB with VNNI).
PyTorch's old fbgemm qconfig avoided it with ``reduce_range`` (7-bit activations); slimkit
calibrates full 8-bit ranges, so it measures the kernel once per process instead and, where it
saturates, runs its static int8 layers as an exact float emulation of the same integer math and
names that in the layer's runtime label (no silent loss of accuracy, no silent speed claim).
"""
from __future__ import annotations

import functools
import warnings

import torch

__all__ = ["fbgemm_u8s8_exact", "EMULATED"]

#: runtime label of an int8 layer that emulates its integer math in float32 on this CPU
EMULATED = ("fp32 emulation of int8 (this CPU's fbgemm uint8 x int8 kernel saturates int16 pairs: no VNNI; "
            "values equal the int8 layer's, speed is fp32's)")


@functools.lru_cache(maxsize=None)
def fbgemm_u8s8_exact() -> bool:
    """True when fbgemm's quantized linear returns the exact int32 sum for worst-case operands
    (uint8 255 x int8 127, 64 terms); False where it saturates (x86 without VNNI)."""
    if "fbgemm" not in torch.backends.quantized.supported_engines:
        return False
    with warnings.catch_warnings():  # quantized-tensor constructors are deprecated, still fbgemm's only door
        warnings.simplefilter("ignore", UserWarning)
        weight = torch._make_per_tensor_quantized_tensor(torch.full((8, 64), 127, dtype=torch.int8), 1.0, 0)
        packed = torch.ops.quantized.linear_prepack(weight, None)
        out = torch.ops.quantized.linear_with_input_q_dq_qweight_dq_output_fp32(torch.full((4, 64), 255.0), 1.0, 0,
                                                                                packed)
    return bool(torch.all(out == 255 * 127 * 64))
