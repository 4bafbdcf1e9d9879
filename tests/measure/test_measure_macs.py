"""MAC counts against their analytic values, including dynamic-int8 layers."""
from __future__ import annotations

import warnings

import torch
from torch import nn
from torch.ao.nn.quantized import Linear as StaticQuantLinear
from torch.ao.nn.quantized.dynamic import Linear as DynamicQuantLinear

from slimkit.measure import count_macs


def test_mlp_macs_are_analytic() -> None:
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    assert count_macs(model, torch.randn(3, 8)) == 3 * 8 * 16 + 3 * 16 * 4


def test_mlp_macs_with_sequence_dimension() -> None:
    model = nn.Linear(8, 16)
    assert count_macs(model, torch.randn(2, 5, 8)) == 2 * 5 * 8 * 16


def test_conv_macs_are_analytic() -> None:
    model = nn.Conv2d(3, 6, kernel_size=3, padding=1)
    # N * H_out * W_out * C_out * (C_in / groups) * kH * kW
    assert count_macs(model, torch.randn(2, 3, 5, 5)) == 2 * 5 * 5 * 6 * 3 * 3 * 3


def test_grouped_strided_conv_macs() -> None:
    model = nn.Conv2d(4, 8, kernel_size=3, stride=2, groups=2)
    # 9x9 input, stride 2, no padding -> 4x4 output
    assert count_macs(model, torch.randn(1, 4, 9, 9)) == 1 * 4 * 4 * 8 * 2 * 3 * 3


def test_dynamic_int8_linear_counts_like_fp32() -> None:
    fp32 = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    with warnings.catch_warnings():  # torch warns that quantized-tensor constructors are deprecated
        warnings.simplefilter("ignore", UserWarning)
        int8 = nn.Sequential(DynamicQuantLinear(8, 16), nn.ReLU(), DynamicQuantLinear(16, 4))
    x = torch.randn(2, 3, 8)
    assert count_macs(int8, x) == count_macs(fp32, x) == 2 * 3 * (8 * 16 + 16 * 4)


def test_direct_linear_dynamic_op_is_counted() -> None:
    class DirectOp(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            weight = torch.quantize_per_tensor(torch.randn(5, 7), 0.05, 0, torch.qint8)
            self.packed = torch.ops.quantized.linear_prepack(weight, None)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.ops.quantized.linear_dynamic(x, self.packed, True)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        model = DirectOp()
    assert count_macs(model, torch.randn(4, 7)) == 4 * 7 * 5


def test_static_quantized_linear_counts_like_fp32() -> None:
    class Static(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = StaticQuantLinear(6, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            q = torch.quantize_per_tensor(x, 0.1, 0, torch.quint8)
            return self.linear(q).dequantize()

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        model = Static()
        assert count_macs(model, torch.randn(4, 6)) == 4 * 6 * 3


def test_static_int8_conv_model_counts_like_fp32() -> None:
    """Both static-int8 conv paths (per layer and FX graph mode) count the float conv's MACs."""
    import slimkit as sk

    torch.manual_seed(0)
    body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU6(),
                         nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=8), nn.Conv2d(8, 4, 1))
    fp32 = nn.Sequential(body, nn.Flatten(), nn.Linear(4 * 4 * 4, 5)).eval()
    x = torch.randn(2, 3, 8, 8)
    expected = 2 * (8 * 8 * 8 * 3 * 9 + 4 * 4 * 8 * 9 + 4 * 4 * 4 * 8) + 2 * 64 * 5
    assert count_macs(fp32, x) == expected
    for graph in ("on", "off"):
        q = sk.compress(fp32, {"steps": [{"quantize": {"method": "static_int8", "graph": graph}}]}, calib=[x],
                        progress=False, measure=False).model
        assert count_macs(q, x) == expected, graph
