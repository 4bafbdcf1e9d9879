"""Ternary weights: exactly three values {-α, 0, α} per output channel (TWN), 2 bits per weight."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import slimkit as sk
from slimkit.quantize.binary import LowBitLayer, ternarize


def mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 8)).eval()


def test_three_values_per_channel(tmp_path) -> None:
    model = mlp()
    res = sk.compress(model, {"steps": [{"quantize": {"method": "ternary"}}]}, progress=False, measure=False)
    layer = res.model[0]
    assert isinstance(layer, LowBitLayer) and layer.bits == 2 and layer.weight_packed.shape == (256, 16)
    for row in layer.dequantized_weight():
        values = torch.unique(row)
        assert len(values) == 3 and float(values[1]) == 0.0 and float(values[0]) == -float(values[2])
    zero_fraction = res.report.steps[0]["notes"]["ternary_zero_fraction"]
    assert 0.3 < zero_fraction < 0.65  # Gaussian-like weights, Δ = 0.7·mean|w|: ~42% zeros
    sk.save(res.model, tmp_path / "t")
    loaded = sk.load(tmp_path / "t", model=mlp())
    x = torch.randn(3, 64)
    with torch.no_grad():
        assert torch.equal(loaded(x), res.model(x))


def test_ternarize_math() -> None:
    w = torch.tensor([[1.0, -1.0, 0.1, 0.2, -3.0]])  # mean|w| = 1.06, Δ = 0.742
    codes, alpha = ternarize(w, delta=0.7)
    assert codes.tolist() == [[1, -1, 0, 0, -1]]
    assert torch.allclose(alpha, torch.tensor([5.0 / 3.0]))


def test_ternary_closer_than_binary() -> None:
    model, x = mlp(), torch.randn(64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = model(x)
        errs = {m: float((sk.compress(model, {"steps": [{"quantize": {"method": m}}]}, progress=False,
                                      measure=False).model(x) - ref).pow(2).mean()) for m in ("binary", "ternary")}
    assert errs["ternary"] < errs["binary"]


def test_bad_delta_names_field() -> None:
    with pytest.raises(sk.ConfigError, match="delta"):
        sk.Recipe.from_dict({"steps": [{"quantize": {"method": "ternary", "delta": -1}}]})
