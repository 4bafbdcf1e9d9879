"""Static int8: calibrated Linear (torch._int_mm) and Conv2d (fbgemm) with BN folding."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import slimkit as sk
from slimkit.core.provenance import get_edits
from slimkit.quantize.static_int8 import FoldedBatchNorm, Int8StaticConv2d, Int8StaticLinear


def sqnr_db(ref: torch.Tensor, out: torch.Tensor) -> float:
    return float(10 * torch.log10(ref.pow(2).sum() / (ref - out).pow(2).sum()))


def static(model: nn.Module, calib: list, **options) -> sk.Result:
    return sk.compress(model, {"steps": [{"quantize": {"method": "static_int8", **options}}]}, calib=calib,
                       progress=False, measure=False)


def mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 32)).eval()


class ConvNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.act = nn.ReLU6()
        self.depthwise = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.fc = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.depthwise(self.act(self.bn1(self.conv1(x))))).mean((2, 3)))


def convnet() -> ConvNet:
    torch.manual_seed(0)
    net = ConvNet()
    with torch.no_grad():
        net.bn1.running_mean.normal_()
        net.bn1.running_var.uniform_(0.5, 2.0)
        net.bn1.weight.normal_()
    return net.eval()


def batches(shape: tuple[int, ...], n: int, seed: int) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(*shape, generator=gen) for _ in range(n)]


@pytest.mark.parametrize("observer", ["minmax", "percentile", "mse"])
def test_linear_sqnr_per_observer(observer) -> None:
    model, x = mlp(), batches((64, 64), 1, 9)[0]
    res = static(model, batches((32, 64), 4, 1), observer=observer)
    assert isinstance(res.model[0], Int8StaticLinear) and res.model[0].weight_int8.dtype == torch.int8
    with torch.no_grad():
        assert sqnr_db(model(x), res.model(x)) >= 30.0  # measured 32-35 dB


def test_per_channel_weights_beat_per_tensor() -> None:
    """Rows of very different magnitude: per-channel scales keep the small rows' resolution."""
    model = mlp()
    with torch.no_grad():
        model[0].weight.mul_(torch.exp(2 * torch.randn(256, 1, generator=torch.Generator().manual_seed(3))))
    calib, w = batches((32, 64), 4, 1), model[0].weight.detach()
    pc = sqnr_db(w, static(model, calib, per_channel=True).model[0].dequantized_weight())
    pt = sqnr_db(w, static(model, calib, per_channel=False).model[0].dequantized_weight())
    assert pc >= 38.0 and pc > pt + 10.0


def test_static_linear_matches_integer_reference() -> None:
    """y = ((clamp(round(x/s)+z, 0, 255) − z) @ q_wᵀ) · s · s_w + b, int32 accumulation."""
    torch.manual_seed(0)
    linear = nn.Linear(16, 8)
    w_scale = linear.weight.abs().amax(1).detach() / 127
    s_x, z_x = torch.tensor([0.02]), torch.tensor([100])
    layer = Int8StaticLinear.from_linear(linear, w_scale, (s_x, z_x))
    x = torch.randn(5, 16)
    x[0, 0] = 10.0  # beyond the calibrated range: saturates at 255
    xq = (torch.round(x / s_x) + z_x).clamp(0, 255).to(torch.int64) - 100
    acc = xq @ layer.weight_int8.to(torch.int64).t()
    expected = acc.double() * s_x.double() * w_scale.double() + linear.bias.double()
    with torch.no_grad():
        assert torch.allclose(layer(x).double(), expected, atol=1e-4)


def test_conv_bn_folded_and_quantized() -> None:
    net = convnet()
    calib, x = batches((8, 3, 16, 16), 4, 1), batches((8, 3, 16, 16), 1, 9)[0]
    res = static(net, calib)
    notes = res.report.steps[0]["notes"]
    assert notes["folded_batchnorms"] == 1 and notes["quantized_conv_layers"] == 2
    assert notes["conv_outputs_clamped_to_activation"] == 1  # conv1 → bn1 → ReLU6
    assert isinstance(res.model.bn1, FoldedBatchNorm)
    assert isinstance(res.model.conv1, Int8StaticConv2d) and isinstance(res.model.depthwise, Int8StaticConv2d)
    assert res.model.depthwise.weight_int8.shape == (8, 1, 3, 3)
    assert float(res.model.conv1.output_scale) <= 6.0 / 255 + 1e-7  # clamped to ReLU6's [0, 6]
    with torch.no_grad():
        assert sqnr_db(net(x), res.model(x)) >= 25.0  # measured ~33 dB
    kinds = [(e["path"], e["kind"]) for e in get_edits(res.model)]
    assert ("bn1", "folded_batchnorm") in kinds and ("conv1", "int8_static_conv2d") in kinds


def test_save_load_identical(tmp_path) -> None:
    net = convnet()
    res = static(net, batches((8, 3, 16, 16), 2, 1))
    sk.save(res.model, tmp_path / "q")
    loaded = sk.load(tmp_path / "q", model=ConvNet())
    x = batches((4, 3, 16, 16), 1, 5)[0]
    with torch.no_grad():
        assert torch.equal(loaded(x), res.model(x))


def test_needs_calibration_data() -> None:
    with pytest.raises(sk.DataError, match="calib"):
        sk.compress(mlp(), {"steps": [{"quantize": {"method": "static_int8"}}]}, progress=False, measure=False)


@pytest.mark.parametrize("bad, field", [({"observer": "kl"}, "observer"), ({"percentile": 50.0}, "percentile"),
                                        ({"layer_types": ["LSTM"]}, "layer_types"), ({"per_channel": "yes"}, "per_channel")])
def test_bad_config_names_field(bad, field) -> None:
    with pytest.raises(sk.ConfigError, match=field):
        sk.Recipe.from_dict({"steps": [{"quantize": {"method": "static_int8", **bad}}]})


def test_bert_static_cosine(make_bert, token_batch) -> None:
    model = make_bert()
    res = sk.compress(model, {"steps": [{"quantize": {"method": "static_int8"}}]}, calib=[token_batch],
                      progress=False, measure=False)
    with torch.no_grad():
        ref = model(**token_batch).last_hidden_state
        out = res.model(**token_batch).last_hidden_state
    assert float(nn.functional.cosine_similarity(ref.flatten(), out.flatten(), dim=0)) > 0.99
