"""The runtime label of int8 layers follows the weights' device: integer kernel on CPU only."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from slimkit.quantize.dynamic_int8 import Int8DynamicLinear
from slimkit.quantize.fbgemm import EMULATED, fbgemm_u8s8_exact
from slimkit.quantize.smoothquant.core import SmoothQuantLinear
from slimkit.quantize.static_int8 import Int8StaticConv2d, Int8StaticLinear
from slimkit.quantize.static_int8.core import int8_runtime


@pytest.mark.parametrize("device", ["cuda", "mps", "meta", "xpu"])
def test_label_off_cpu_says_dequantized(device: str) -> None:
    label = int8_runtime("torch int8 (_int_mm, per-token activations)", torch.device(device))
    assert label.startswith("dequantized fp matmul") and device in label and "_int_mm" not in label


def test_label_on_cpu_is_the_kernel() -> None:
    assert int8_runtime("torch int8 (_int_mm, per-token activations)", torch.device("cpu")) == \
        "torch int8 (_int_mm, per-token activations)"


@pytest.mark.parametrize("make", [
    lambda: Int8DynamicLinear.from_linear(nn.Linear(8, 4)),
    lambda: Int8DynamicLinear.from_linear(nn.Linear(8, 4), activations="per_tensor"),
    lambda: Int8StaticLinear(8, 4),
    lambda: SmoothQuantLinear(8, 4, activations="per_token"),
    lambda: Int8StaticConv2d(3, 4, (3, 3), (1, 1), (1, 1), (1, 1), 1),
])
def test_layer_label_follows_weight_device(make) -> None:  # noqa: ANN001
    layer = make()
    on_cpu = layer.slimkit_runtime
    if "_int_mm" in on_cpu:  # int8 x int8: exact on every x86 CPU
        assert on_cpu.startswith("torch int8 (")
    elif isinstance(layer, Int8DynamicLinear):  # fbgemm dynamic: 7-bit activations where the kernel saturates
        assert on_cpu.startswith("torch int8 (") and ("reduce_range" in on_cpu) != fbgemm_u8s8_exact()
    else:  # fbgemm static: float emulation of the integer math where the kernel saturates (no VNNI)
        assert on_cpu.startswith("torch int8 (") if fbgemm_u8s8_exact() else on_cpu == EMULATED
    layer.to("meta")  # any non-CPU device: the layers' forward dequantizes there
    assert layer.slimkit_runtime.startswith("dequantized fp matmul on meta")
