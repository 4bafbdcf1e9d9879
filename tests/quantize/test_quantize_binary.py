"""Binary weights: exactly two values per output channel, α = mean|w|, 1 bit per weight on disk."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import slimkit as sk
from slimkit.quantize.binary import LowBitLayer, binarize, pack_codes, unpack_codes


def mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 8)).eval()


def binary(model: nn.Module, **options) -> sk.Result:
    return sk.compress(model, {"steps": [{"quantize": {"method": "binary", **options}}]}, progress=False, measure=False)


@pytest.mark.parametrize("bits", [1, 2])
def test_pack_round_trip(bits) -> None:
    gen = torch.Generator().manual_seed(0)
    codes = torch.randint(-1, 2, (5, 13), generator=gen).to(torch.int8)
    if bits == 1:
        codes = torch.where(codes >= 0, 1, -1).to(torch.int8)
    packed = pack_codes(codes, bits)
    assert packed.dtype == torch.uint8 and packed.shape == (5, -(-13 * bits // 8))
    assert torch.equal(unpack_codes(packed, bits, 13), codes)


def test_two_values_per_channel_with_optimal_scale() -> None:
    model = mlp()
    res = binary(model)
    layer = res.model[0]
    assert isinstance(layer, LowBitLayer) and layer.weight_packed.shape == (256, 8)  # 64 weights → 8 bytes
    w, deq = model[0].weight.detach(), layer.dequantized_weight()
    for row, ref in zip(deq, w):
        values = torch.unique(row)
        assert len(values) == 2 and torch.allclose(values, torch.stack([-ref.abs().mean(), ref.abs().mean()]))
    assert torch.equal(torch.sign(deq), torch.where(w >= 0, 1.0, -1.0))


def test_binarize_scale_minimises_error() -> None:
    w = torch.randn(4, 100, generator=torch.Generator().manual_seed(0))
    codes, alpha = binarize(w)
    err = (codes * alpha[:, None] - w).pow(2).sum()
    for factor in (0.9, 1.1):
        assert (codes * (alpha[:, None] * factor) - w).pow(2).sum() > err


def test_conv_and_checkpoint_bytes(tmp_path) -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(16 * 8 * 8, 10)).eval()
    res = binary(net, layer_types=["Linear", "Conv2d"])
    assert isinstance(res.model[0], LowBitLayer) and res.model[0].op == "conv2d"
    sk.save(net, tmp_path / "fp32")
    sk.save(res.model, tmp_path / "bin")
    fresh = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(16 * 8 * 8, 10))
    loaded = sk.load(tmp_path / "bin", model=fresh)
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        assert torch.equal(loaded(x), res.model(x))
    ratio = (tmp_path / "bin" / "model.safetensors").stat().st_size / (tmp_path / "fp32" / "model.safetensors").stat().st_size
    assert ratio < 0.06  # 1 bit of 32, plus fp32 scales and biases


def test_tied_head_skipped_and_bad_config(make_llama) -> None:
    res = binary(make_llama(), targets=["lm_head", "model.layers.0.mlp"])
    assert [s["layer"] for s in res.report.steps[0]["skipped"]] == ["lm_head"]
    assert res.report.steps[0]["notes"]["quantized_layers"] == 3
    with pytest.raises(sk.ConfigError, match="layer_types"):
        sk.Recipe.from_dict({"steps": [{"quantize": {"method": "binary", "layer_types": ["Embedding"]}}]})
    with pytest.raises(sk.ConfigError, match="nope"):
        binary(mlp(), targets=["nope"])
