"""SmoothQuant: smoothing math, outlier activations, W8A8 static / per-token, save → load."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import slimkit as sk
from slimkit.quantize.smoothquant import SmoothQuantLinear, smoothing_factors


def sqnr_db(ref: torch.Tensor, out: torch.Tensor) -> float:
    return float(10 * torch.log10(ref.pow(2).sum() / (ref - out).pow(2).sum()))


def mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 32)).eval()


def outlier_batches(n: int, seed: int) -> list[torch.Tensor]:
    """Activations with 4 outlier channels 50× larger, as in transformer hidden states."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        x = torch.randn(32, 64, generator=gen)
        x[:, :4] *= 50.0
        out.append(x)
    return out


def run(model: nn.Module, method: str, **options) -> sk.Result:
    return sk.compress(model, {"steps": [{"quantize": {"method": method, **options}}]}, calib=outlier_batches(16, 1),
                       progress=False, measure=False)


def test_smoothing_factors_formula() -> None:
    act = torch.tensor([4.0, 1.0, 0.0])
    w = torch.tensor([[1.0, 4.0, 2.0], [-0.25, 1.0, 1.0]])
    s = smoothing_factors(act, w, alpha=0.5)
    assert torch.allclose(s[:2], torch.tensor([2.0, 0.5]))  # sqrt(4)/sqrt(1), sqrt(1)/sqrt(4)
    assert float(s[2]) == 1.0  # a dead channel is left alone


def test_smoothing_preserves_the_float_product() -> None:
    torch.manual_seed(0)
    linear, x = nn.Linear(16, 8), torch.randn(4, 16)
    s = smoothing_factors(x.abs().amax(0), linear.weight, 0.5)
    assert torch.allclose((x / s) @ (linear.weight * s).t(), x @ linear.weight.t(), atol=1e-5)


def test_smoothquant_beats_static_int8_on_outliers() -> None:
    model, x = mlp(), torch.cat(outlier_batches(4, 9))
    with torch.no_grad():
        ref = model(x)
        plain = sqnr_db(ref, run(model, "static_int8").model(x))
        smooth = sqnr_db(ref, run(model, "smoothquant", alpha=0.5).model(x))
        token = sqnr_db(ref, run(model, "smoothquant", alpha=0.5, activations="per_token").model(x))
    assert smooth > plain + 5.0  # measured ~36.6 vs ~27.6 dB
    assert smooth >= 33.0 and token >= 36.0


def test_alpha_zero_is_no_smoothing() -> None:
    model, x = mlp(), outlier_batches(2, 9)[1]
    res = run(model, "smoothquant", alpha=0.0)
    assert isinstance(res.model[0], SmoothQuantLinear)
    layer = res.model[0]
    w_absmax = mlp()[0].weight.abs().amax(0)
    assert torch.allclose(layer.smooth, 1.0 / w_absmax.clamp_min(1e-5), rtol=1e-5)  # s = 1 / max|W|^1
    assert res.report.steps[0]["notes"]["max_outlier_ratio"] > 20


@pytest.mark.parametrize("activations", ["static", "per_token"])
def test_save_load_identical(tmp_path, activations) -> None:
    def small() -> nn.Module:
        return nn.Sequential(nn.Linear(64, 96), nn.ReLU(), nn.Linear(96, 16)).eval()

    res = run(small(), "smoothquant", activations=activations)
    sk.save(res.model, tmp_path / "q")
    loaded = sk.load(tmp_path / "q", model=small())
    assert loaded[0].activations == activations
    x = outlier_batches(1, 5)[0]
    with torch.no_grad():
        assert torch.equal(loaded(x), res.model(x))


def test_tied_head_skipped(make_llama, token_batch) -> None:
    res = sk.compress(make_llama(), {"steps": [{"quantize": {"method": "smoothquant"}}]}, calib=[token_batch],
                      progress=False, measure=False)
    skipped = [s["layer"] for s in res.report.steps[0]["skipped"]]
    assert skipped == ["lm_head"]
    assert isinstance(res.model.model.layers[0].mlp.down_proj, SmoothQuantLinear)


@pytest.mark.parametrize("bad, field", [({"alpha": 1.5}, "alpha"), ({"activations": "dynamic"}, "activations")])
def test_bad_config_names_field(bad, field) -> None:
    with pytest.raises(sk.ConfigError, match=field):
        sk.Recipe.from_dict({"steps": [{"quantize": {"method": "smoothquant", **bad}}]})
