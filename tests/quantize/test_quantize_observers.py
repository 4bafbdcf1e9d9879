"""Observers: min-max / percentile / MSE ranges, per-tensor and per-channel, qparams grids."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import slimkit as sk
from slimkit.quantize.observers import OBSERVERS, fake_quantize, make_observer, qparams, tail_quantile


def test_minmax_per_tensor_and_per_channel() -> None:
    x = torch.tensor([[1.0, -3.0, 2.0], [0.5, 4.0, -1.0]])
    obs = make_observer("minmax")
    obs.update(x)
    obs.update(x * 0.5)
    lo, hi = obs.range()
    assert lo.tolist() == [-3.0] and hi.tolist() == [4.0]
    per_col = make_observer("minmax", axis=1)
    per_col.update(x)
    lo, hi = per_col.range()
    assert lo.tolist() == [0.5, -3.0, -1.0] and hi.tolist() == [1.0, 4.0, 2.0]


def test_percentile_clips_a_single_outlier() -> None:
    x = torch.randn(100_000, generator=torch.Generator().manual_seed(0))
    x[0] = 1000.0
    obs = make_observer("percentile", percentile=99.9)
    obs.update(x)
    lo, hi = obs.range()
    assert 2.5 < float(hi) < 4.0 and -4.0 < float(lo) < -2.5  # ~±3.3σ, not 1000


def test_mse_range_beats_minmax_error_with_outlier() -> None:
    x = torch.randn(1, 20_000, generator=torch.Generator().manual_seed(0))
    x[0, 0] = 60.0
    errors = {}
    for name in ("minmax", "mse"):
        obs = make_observer(name, bits=4)
        obs.update(x)
        scale, zero = qparams(*obs.range(), bits=4)
        errors[name] = float((fake_quantize(x, scale, zero, 4) - x).pow(2).mean())
    assert errors["mse"] < 0.2 * errors["minmax"]


def test_qparams_symmetric_and_asymmetric() -> None:
    scale, zero = qparams(torch.tensor([-2.0]), torch.tensor([1.0]))
    assert float(scale) == pytest.approx(2 / 127) and int(zero) == 0
    scale, zero = qparams(torch.tensor([0.5]), torch.tensor([6.0]), symmetric=False)  # range widened to 0
    assert float(scale) == pytest.approx(6 / 255) and int(zero) == 0
    scale, zero = qparams(torch.tensor([-1.0]), torch.tensor([3.0]), symmetric=False)
    assert float(scale) == pytest.approx(4 / 255) and int(zero) == 64
    x = torch.tensor([-1.0, 0.0, 3.0])
    assert torch.allclose(fake_quantize(x, scale, zero, symmetric=False), x, atol=float(scale) / 2)


def test_unknown_observer_is_a_config_error() -> None:
    with pytest.raises(sk.ConfigError, match="observer"):
        make_observer("entropy")


# ----------------------------------------------------------------------------- an observer that saw nothing
@pytest.mark.parametrize("name", list(OBSERVERS))
def test_an_observer_that_saw_no_data_is_a_data_error(name) -> None:
    obs = make_observer(name)
    with pytest.raises(sk.DataError, match="saw no data"):
        obs.range()
    obs.label = "the input of layer 'blocks.3.fc'"
    with pytest.raises(sk.DataError, match=r"observer of the input of layer 'blocks.3.fc' saw no data"):
        obs.range()


class _UnusedBranch(nn.Module):
    """``side`` is a Linear that ``forward`` never calls: calibration never reaches it."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(16, 16)
        self.side = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x)


@pytest.mark.parametrize("step", [
    {"quantize": {"method": "static_int8", "graph": "off"}},
    {"quantize": {"method": "smoothquant"}},
], ids=["static_int8", "smoothquant"])
def test_a_layer_calibration_never_reaches_is_named(step) -> None:
    torch.manual_seed(0)
    calib = [torch.randn(4, 16) for _ in range(2)]
    with pytest.raises(sk.DataError, match=r"the input of layer 'side' saw no data"):
        sk.compress(_UnusedBranch().eval(), {"steps": [step]}, calib=calib, progress=False, measure=False)


@pytest.mark.parametrize("q", [0.0, 1e-4, 0.001, 0.03, 0.5, 0.97, 0.999, 0.9999, 1.0])
@pytest.mark.parametrize("n", [1, 2, 7, 1000, 100_003])
def test_tail_quantile_equals_torch_quantile(q: float, n: int) -> None:
    c = torch.randn(3, n, generator=torch.Generator().manual_seed(n)) ** 3  # heavy tails
    got = tail_quantile(c, q)
    want = torch.quantile(c, torch.tensor(q), dim=1)
    assert got.shape == (3,)
    # torch.quantile computes the interpolation position in float32: equal to that rounding
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
