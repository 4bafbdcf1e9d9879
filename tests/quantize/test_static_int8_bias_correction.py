"""static_int8 ``bias_correction``: the expected output shift of the int8 weights is added to the bias."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import slimkit as sk
from slimkit.quantize.static_int8 import Int8StaticConv2d, Int8StaticLinear


def static(model: nn.Module, calib: list, **options) -> sk.Result:
    return sk.compress(model, {"steps": [{"quantize": {"method": "static_int8", "graph": "off", **options}}]},
                       calib=calib, progress=False, measure=False)


def positive_batches(shape: tuple[int, ...], n: int, seed: int, mean: float = 3.0) -> list[torch.Tensor]:
    """Post-ReLU-like inputs with a large mean: the case where rounding the weights shifts the output."""
    gen = torch.Generator().manual_seed(seed)
    return [(torch.randn(*shape, generator=gen) + mean).clamp_min(0) for _ in range(n)]


class DepthwiseNet(nn.Module):
    """A depthwise conv whose BatchNorm divides by a tiny running std (as MobileNetV2's first depthwise conv)."""

    def __init__(self) -> None:
        super().__init__()
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False)
        self.bn = nn.BatchNorm2d(8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.dw(x))


def depthwise_net() -> DepthwiseNet:
    torch.manual_seed(0)
    net = DepthwiseNet()
    with torch.no_grad():
        net.dw.weight.normal_()
        x = torch.randn(256, 8, 16, 16).add(3.0).clamp_min(0)
        y = net.dw(x)
        net.bn.running_mean.copy_(y.mean((0, 2, 3)))
        net.bn.running_var.copy_(y.var((0, 2, 3)) * 1e-2)  # BN scales the conv's output up 10x
    return net.eval()


@pytest.mark.parametrize("value", ["yes", 1, None])
def test_bias_correction_must_be_bool(value) -> None:
    with pytest.raises(sk.ConfigError, match="bias_correction"):
        static(nn.Linear(4, 4), [torch.randn(2, 4)], bias_correction=value)


def test_bias_correction_refused_with_graph_on() -> None:
    with pytest.raises(sk.ConfigError, match="bias_correction.*graph"):
        sk.compress(nn.Linear(4, 4), {"steps": [{"quantize": {"method": "static_int8", "graph": "on",
                                                              "bias_correction": True}}]},
                    calib=[torch.randn(2, 4)], progress=False, measure=False)


def test_linear_bias_shift_is_weight_error_times_mean_input() -> None:
    torch.manual_seed(0)
    lin = nn.Linear(64, 32, bias=False).eval()
    calib = positive_batches((16, 64), 4, 1)
    plain = static(nn.Sequential(lin), calib).model[0]
    corrected = static(nn.Sequential(lin), calib, bias_correction=True).model[0]
    assert isinstance(corrected, Int8StaticLinear) and plain.bias is None and corrected.bias is not None
    mean = torch.cat(calib).mean(0)
    expected = (lin.weight.detach() - corrected.dequantized_weight()) @ mean
    assert torch.allclose(corrected.bias, expected, atol=1e-5)
    assert float(expected.abs().max()) > 1e-3  # the shift is real, not a zero test
    # the int8 weights themselves are unchanged by the correction
    assert torch.equal(corrected.weight_int8, plain.weight_int8)


def test_depthwise_bn_fold_error_shrinks_with_bias_correction() -> None:
    net = depthwise_net()
    calib = positive_batches((16, 8, 16, 16), 4, 2)
    held = positive_batches((16, 8, 16, 16), 2, 3)
    plain = static(net, calib).model
    corrected = static(net, calib, bias_correction=True).model
    assert isinstance(corrected.dw, Int8StaticConv2d)
    with torch.no_grad():
        ref = torch.cat([net(x) for x in held])
        err_plain = torch.cat([plain(x) for x in held]) - ref
        err_corr = torch.cat([corrected(x) for x in held]) - ref
    # the systematic per-channel error (its mean over the held-out batches) is what the correction removes
    bias_plain = err_plain.mean((0, 2, 3)).abs().mean()
    bias_corr = err_corr.mean((0, 2, 3)).abs().mean()
    assert float(bias_corr) < 0.5 * float(bias_plain), (float(bias_plain), float(bias_corr))
    assert float(err_corr.pow(2).mean()) < float(err_plain.pow(2).mean())


def test_bias_corrected_model_saves_and_loads(tmp_path) -> None:
    torch.manual_seed(0)
    lin = nn.Sequential(nn.Linear(16, 8, bias=False)).eval()
    calib = positive_batches((8, 16), 2, 4)
    q = static(lin, calib, bias_correction=True).model
    sk.save(q, tmp_path / "m")
    back = sk.load(tmp_path / "m", model=nn.Sequential(nn.Linear(16, 8, bias=False)))
    x = positive_batches((4, 16), 1, 5)[0]
    with torch.no_grad():
        assert torch.equal(back(x), q(x))
