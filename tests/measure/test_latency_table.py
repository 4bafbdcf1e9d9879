"""Per-layer latency table: cached and reused, monotone predictions, interpolation, atomic cache files."""
from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from slimkit.core.errors import ConfigError
from slimkit.measure.latency_table import LatencyTable, LayerTable, build_latency_table, time_module, width_grid


class TinyCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.dw = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1, groups=16, bias=False), nn.BatchNorm2d(16), nn.ReLU6())
        self.b = nn.Conv2d(16, 24, 1)
        self.head = nn.Linear(24, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.b(self.dw(self.a(x))).mean((2, 3)))


GROUPS = {"a": [("a.0", "out"), ("dw.0", "out"), ("b", "in")], "b": [("b", "out"), ("head", "in")]}


class Counter:
    """The real timer, counting how often the table calls it."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, module: nn.Module, x: torch.Tensor) -> float:
        self.calls += 1
        return time_module(module, x)


@pytest.fixture
def net() -> TinyCNN:
    torch.manual_seed(0)
    return TinyCNN().eval()


def build(net: nn.Module, tmp_path, timer: Counter, **kw) -> LatencyTable:
    return build_latency_table(net, torch.randn(2, 3, 16, 16), GROUPS, cache=tmp_path, time_fn=timer, runs=3, warmup=1,
                               threads=1, **kw)


def test_table_is_cached_and_reused(net: TinyCNN, tmp_path) -> None:
    first, second = Counter(), Counter()
    t1 = build(net, tmp_path, first)
    # a: 7 out widths; dw: 7 (diagonal); b: 7 in x 7 out; head: 7 in -> 70 timed variants x 3 runs
    assert first.calls == (7 + 7 + 49 + 7) * 3
    assert [t.path for t in t1.layers] == ["a.0", "dw.0", "b", "head"]
    assert t1.layers[0].followers == ["a.1", "a.2"] and t1.layers[1].depthwise
    assert all(t.measured for t in t1.layers)
    t2 = build(net, tmp_path, second)
    assert second.calls == 0  # every layer read from the cache
    assert not any(t.measured for t in t2.layers)
    assert [t.ms for t in t2.layers] == [t.ms for t in t1.layers]
    assert not list(tmp_path.glob(".*tmp"))  # atomic writes leave no temporary file
    third = Counter()
    build(net, tmp_path, third, ratios=(0.5, 1.0))  # another grid is another key: measured again
    assert third.calls > 0


def test_corrupt_cache_entry_is_remeasured(net: TinyCNN, tmp_path) -> None:
    build(net, tmp_path, Counter())
    files = sorted(tmp_path.glob("*.json"))
    assert len(files) == 4
    files[0].write_text("{not json", encoding="utf-8")
    again = Counter()
    build(net, tmp_path, again)
    assert 0 < again.calls < (7 + 7 + 49 + 7) * 3
    assert json.loads(files[0].read_text(encoding="utf-8"))["key"]["threads"] == 1


def test_predict_is_monotone_in_every_width(net: TinyCNN, tmp_path) -> None:
    table = build(net, tmp_path, Counter())
    assert table.full == {"a": 16, "b": 24}
    for other in (3, 12, 24):
        preds = [table.predict({"a": w, "b": other}) for w in range(1, 17)]
        assert all(p2 >= p1 for p1, p2 in zip(preds, preds[1:]))
    for other in (2, 9, 16):
        preds = [table.predict({"a": other, "b": w}) for w in range(1, 25)]
        assert all(p2 >= p1 for p1, p2 in zip(preds, preds[1:]))
    assert table.predict({}) == pytest.approx(table.predict({"a": 16, "b": 24}))
    assert table.ratio({"a": 4, "b": 6}) < 1.0


def test_interpolation_and_monotone_floor() -> None:
    # raw times with a noise spike at width 16: the table never predicts narrower slower than wider
    layer = LayerTable("c", [], None, "g", False, [8], [16, 32, 64], [[5.0, 2.0, 4.0]])
    from slimkit.measure.latency_table import _monotone

    layer.ms = _monotone(layer.ms)
    assert layer.ms == [[2.0, 2.0, 4.0]]
    table = LatencyTable([layer], {"g": 64}, "torch-eager", 1, torch.__version__)
    assert table.predict({"g": 48}) == pytest.approx(3.0)  # halfway between 32 and 64
    assert table.predict({"g": 8}) == pytest.approx(1.0)  # below the grid: proportional to width
    with pytest.raises(ConfigError, match="unknown group"):
        table.predict({"nope": 3})


def test_width_grid_rounds_to_multiples() -> None:
    assert width_grid(96, round_to=8) == [24, 32, 48, 64, 72, 80, 96]
    assert width_grid(16, round_to=8) == [8, 16]
    assert width_grid(12) == [3, 4, 6, 8, 9, 10, 12]


def test_bad_arguments_raise(net: TinyCNN, tmp_path) -> None:
    with pytest.raises(ConfigError, match="runtime"):
        build(net, tmp_path, Counter(), runtime="tensorrt")
    with pytest.raises(ConfigError, match="ratios"):
        build(net, tmp_path, Counter(), ratios=(0.0, 1.0))
    with pytest.raises(ConfigError, match="side"):
        build_latency_table(net, torch.randn(1, 3, 8, 8), {"a": [("a.0", "sideways")]}, cache=tmp_path)
