"""``allocation: latency``: the greedy cut given a latency table, and end to end on a tiny CNN."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import slimkit as sk
from slimkit.measure.latency_table import LatencyTable, LayerTable
from slimkit.prune.structured.latency import allocate_latency


def linear_layer(path: str, group: str, full: int, ms_full: float) -> LayerTable:
    """A layer whose time is proportional to its group's width (grid at quarters)."""
    widths = [full // 4 * k for k in (1, 2, 3, 4)]
    return LayerTable(path, [], None, group, False, [8], widths, [[ms_full * w / full for w in widths]])


def table_of(*layers: LayerTable) -> LatencyTable:
    return LatencyTable(list(layers), {t.out_group: t.out_widths[-1] for t in layers}, "torch-eager", 1, "test")


def test_cuts_the_slow_layer_first_and_stops_at_target() -> None:
    table = table_of(linear_layer("slow", "slow", 64, 10.0), linear_layer("fast", "fast", 64, 1.0))
    scores = {"slow": torch.ones(64), "fast": torch.ones(64)}  # equal importance: only time decides
    alloc = allocate_latency(table, scores, 0.7, round_to=8)
    assert alloc.reached and alloc.widths["fast"] == 64
    assert alloc.widths["slow"] == 40  # 64 -> 40 saves 3.75 of 11 ms: first multiple of 8 at or below 0.7
    assert alloc.predicted_ratio == pytest.approx((10 * 40 / 64 + 1) / 11)
    assert 0.7 - 10 * 8 / 64 / 11 < alloc.predicted_ratio <= 0.7  # within one chunk of the target


def test_cuts_the_least_important_units_per_ms() -> None:
    table = table_of(linear_layer("a", "a", 64, 5.0), linear_layer("b", "b", 64, 5.0))
    weak = torch.ones(64)
    weak[:32] = 0.01  # half of group a's units carry (almost) nothing
    alloc = allocate_latency(table, {"a": weak, "b": torch.ones(64)}, 0.75, round_to=8)
    assert alloc.widths == {"a": 32, "b": 64}


def test_floor_and_unreachable_target() -> None:
    table = table_of(linear_layer("a", "a", 64, 5.0), linear_layer("b", "b", 32, 5.0))
    alloc = allocate_latency(table, {"a": torch.rand(64), "b": torch.rand(32)}, 0.1, round_to=8)
    assert not alloc.reached
    assert alloc.widths == {"a": 16, "b": 8}  # the narrowest widths the table measured
    assert alloc.predicted_ratio == pytest.approx(0.25)


class TwoScaleNet(nn.Module):
    """``big`` works on a 32x32 map, ``small`` on 2x2: per channel ``big`` costs ~256x more."""

    def __init__(self) -> None:
        super().__init__()
        self.big = nn.Sequential(nn.Conv2d(8, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU())
        self.big_out = nn.Conv2d(32, 8, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.small = nn.Sequential(nn.Conv2d(8, 32, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU())
        self.small_out = nn.Conv2d(32, 8, 1)
        self.head = nn.Linear(32, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.small_out(self.small(self.pool(self.big_out(self.big(x)))))
        return self.head(y.flatten(1))


def test_end_to_end_cuts_the_expensive_layer_and_replays(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("SLIMKIT_CACHE", str(tmp_path / "cache"))
    torch.manual_seed(0)
    net = TwoScaleNet().eval()
    x = torch.randn(4, 8, 32, 32)
    step = {"method": "structured", "granularity": "channel", "allocation": "latency", "target_latency": 0.6, "round_to": 8}
    res = sk.compress(net, {"steps": [{"prune": step}]}, example_inputs=x, progress=False, measure=False)
    notes = res.report.steps[0]["notes"]
    kept = notes["kept_widths"]
    assert {"big.0", "small.0"} <= set(kept)
    assert kept["big.0"][0] < kept["small.0"][0]  # the expensive map is cut harder
    assert kept["big.0"][0] % 8 == 0 and kept["big.0"][0] >= 8
    assert notes["latency_predicted_ratio"] <= 0.6 or "target_latency_missed" in notes
    assert notes["latency_table"]["measured"] == notes["latency_table"]["layers"]
    assert res.model.big[0].out_channels == kept["big.0"][0] and res.model.small[0].out_channels == kept["small.0"][0]
    assert res.model(x).shape == (4, 4)
    again = sk.compress(net, {"steps": [{"prune": step}]}, example_inputs=x, progress=False, measure=False)
    assert again.report.steps[0]["notes"]["latency_table"]["measured"] == 0  # the cached table is reused
    sk.save(res.model, tmp_path / "m")
    torch.manual_seed(1)
    loaded = sk.load(tmp_path / "m", model=TwoScaleNet())
    with torch.no_grad():
        assert torch.equal(loaded(x), res.model(x))


@pytest.mark.parametrize("step, field", [
    ({"allocation": "latency"}, "target_latency"),
    ({"allocation": "global", "target_latency": 0.5}, "target_latency"),
    ({"allocation": "latency", "target_latency": 1.5}, "target_latency"),
    ({"allocation": "latency", "target_latency": 0.5, "sparsity": 0.3}, "exactly one"),
    ({"allocation": "latency", "target_latency": 0.5, "granularity": "head"}, "granularity"),
    ({"allocation": "latency", "target_latency": 0.5, "latency_runtime": "tensorrt"}, "latency_runtime"),
    ({"allocation": "latency", "target_latency": 0.5, "latency_threads": 0}, "latency_threads"),
])
def test_bad_config(step: dict, field: str) -> None:
    with pytest.raises(sk.ConfigError, match=field):
        sk.Recipe.from_dict({"steps": [{"prune": {"method": "structured", **step}}]})
