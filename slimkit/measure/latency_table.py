"""Per-layer latency table for structured widths (ProxylessNAS / nn-Meter style).

Structured pruning changes how many channels each layer reads and writes. Whole-model latency
does not follow MACs (a 1x1 conv on a 112x112 map is memory-bound, a depthwise conv is cheap in
MACs and slow per MAC), so choosing widths for speed needs a model of *time*. The table times
every Conv / Linear of a model (with the BatchNorm and activation that directly follow it in a
``nn.Sequential``: they run once per output channel too) alone, on its real input shape, at a
grid of kept widths, on this machine, in eager torch at a fixed thread count. ``predict(widths)``
sums the layers' times, bilinearly interpolated on the (input width, output width) grid.

Widths are given per *group*: a name for a set of coupled dimensions (a dependency group of
structured pruning), each member a ``(module path, "in" | "out")`` side. A layer whose input or
output side is in no group keeps that side at full width. A depthwise conv (``groups ==
in_channels == out_channels``) has one width, its group's.

Measured times are cached on disk, one JSON file per layer signature (layer type and
hyper-parameters, input shape, width grid, followers, runtime, threads, torch version), under
``$SLIMKIT_CACHE/latency/`` (default ``~/.cache/slimkit/latency/``), written atomically (a
temporary file beside the target, then ``os.replace``), so a second build of the same model —
or of another model sharing layer shapes — measures nothing again. The cache stores the raw
medians; the table makes each layer's times monotone in both widths (see ``_monotone``), because
a narrower layer is never slower in truth and scheduler noise must not make it look so.

```python
from slimkit.measure.latency_table import build_latency_table
table = build_latency_table(model, example, groups={"conv1": [("conv1", "out"), ("conv2", "in")]})
table.predict({"conv1": 32}) / table.predict({})   # predicted latency ratio with 32 of conv1's filters
```
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import os
import statistics
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from time import perf_counter
from typing import Any

import torch
from torch import nn

from slimkit.core.errors import ConfigError, UnsupportedModelError
from slimkit.core.inputs import ModelInputs, call_model, run_with_hooks
from slimkit.zoo.cache import cache_dir

__all__ = ["DEFAULT_KEEP_RATIOS", "RUNTIMES", "LayerTable", "LatencyTable", "build_latency_table", "time_module",
           "width_grid", "latency_cache_dir"]

#: kept fractions of each width the table measures (rounded to ``round_to``)
DEFAULT_KEEP_RATIOS = (0.25, 0.375, 0.5, 0.625, 0.75, 0.875, 1.0)
#: runtimes the table can time layers in
RUNTIMES = ("torch-eager",)
_FOLLOWERS = (nn.ReLU, nn.ReLU6, nn.SiLU, nn.GELU, nn.Hardswish, nn.Hardsigmoid, nn.Sigmoid, nn.Tanh, nn.LeakyReLU)
_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)

TimeFn = Callable[[nn.Module, torch.Tensor], float]


def latency_cache_dir() -> Path:
    """``$SLIMKIT_CACHE/latency`` (else ``$XDG_CACHE_HOME/slimkit/latency``, else ``~/.cache/slimkit/latency``)."""
    return cache_dir() / "latency"


def width_grid(full: int, ratios: Sequence[float] = DEFAULT_KEEP_RATIOS, round_to: int = 1) -> list[int]:
    """Distinct kept widths ``~ratio * full``, multiples of ``round_to`` (at least one multiple), ascending, ending at ``full``."""
    out = set()
    for r in ratios:
        w = int(round(r * full))
        if round_to > 1:
            w = max(round_to, round_to * int(round(w / round_to)))
        out.add(min(max(w, 1), full))
    out.add(full)
    return sorted(out)


@dataclasses.dataclass
class LayerTable:
    """Times of one layer (with its followers) on a grid of input and output widths.

    ``ms[i][j]`` is the median latency at ``in_widths[i]`` input and ``out_widths[j]`` output
    units, made monotone (non-decreasing along both axes, see ``_monotone``). A side in no group has a one-point
    grid; a depthwise layer has ``in_widths == out_widths`` and only the diagonal is meaningful.
    """

    path: str
    followers: list[str]
    in_group: str | None
    out_group: str | None
    depthwise: bool
    in_widths: list[int]
    out_widths: list[int]
    ms: list[list[float]]
    measured: bool = False  # False: every time came from the cache
    scale: float = 1.0  # in-model / isolated time at full width (already applied to ``ms``)
    key: dict[str, Any] = dataclasses.field(default_factory=dict, repr=False)  # the cache key of the raw times
    in_factor: int = 1  # layer units per group unit (a Linear reading a flattened C x H x W map: H * W)
    out_factor: int = 1

    def at(self, widths: Mapping[str, int]) -> float:
        """Interpolated milliseconds at the groups' current widths (full width where absent)."""
        wi = widths[self.in_group] * self.in_factor if self.in_group in widths else self.in_widths[-1]
        wo = widths[self.out_group] * self.out_factor if self.out_group in widths else self.out_widths[-1]
        if self.depthwise:
            return _interp1(self.out_widths, [self.ms[i][i] for i in range(len(self.out_widths))], wo)
        rows = [_interp1(self.out_widths, row, wo) for row in self.ms]
        return _interp1(self.in_widths, rows, wi)


@dataclasses.dataclass
class LatencyTable:
    """Every timed layer of a model; ``predict`` sums them at given group widths."""

    layers: list[LayerTable]
    full: dict[str, int]  # group -> full width
    runtime: str
    threads: int
    torch_version: str
    other_ms: float = 0.0  # dense whole-model time outside the timed layers (adds, pooling, allocator, Python)

    def predict(self, widths: Mapping[str, int] | None = None) -> float:
        """Predicted milliseconds of the model with ``widths`` kept units per group: the timed
        layers interpolated; the time outside them (``other_ms``: residual adds, pooling, freeing
        activations) is taken to shrink in proportion to them (measured on MobileNetV2 this fits
        the whole-model times of random widths better than a constant)."""
        w = dict(widths or {})
        unknown = sorted(set(w) - set(self.full))
        if unknown:
            raise ConfigError(f"widths: unknown group(s) {unknown}; the table's groups are {sorted(self.full)}")
        layers = sum(layer.at(w) for layer in self.layers)
        return layers * (1.0 + self.other_ms / self._dense_layers()) if self.other_ms else layers

    def _dense_layers(self) -> float:
        return max(sum(layer.ms[-1][-1] for layer in self.layers), 1e-12)

    def ratio(self, widths: Mapping[str, int]) -> float:
        """``predict(widths) / predict()``: the predicted fraction of the dense latency."""
        return self.predict(widths) / self.predict({})

    def layers_of(self, group: str) -> list[LayerTable]:
        """The layers whose input or output width is ``group``'s."""
        return [t for t in self.layers if group in (t.in_group, t.out_group)]

    def min_width(self, group: str) -> int:
        """The narrowest width of ``group`` the table measured (predictions below it are extrapolated)."""
        return min(t.out_widths[0] // t.out_factor if t.out_group == group else t.in_widths[0] // t.in_factor
                   for t in self.layers_of(group))

    def rows(self) -> list[dict[str, Any]]:
        """One plain record per layer (path, groups, grids, full-width ms) for reports."""
        return [{"layer": t.path, "followers": t.followers, "in_group": t.in_group, "out_group": t.out_group,
                 "in_widths": t.in_widths, "out_widths": t.out_widths, "full_ms": round(t.ms[-1][-1], 4)}
                for t in self.layers]


def _interp1(xs: Sequence[int], ys: Sequence[float], x: float) -> float:
    """Linear interpolation on ascending ``xs``; below the grid, proportional to ``x`` (time ~ width)."""
    if len(xs) == 1 or x >= xs[-1]:
        return ys[-1]
    if x <= xs[0]:
        return ys[0] * max(x, 0) / xs[0]
    for k in range(1, len(xs)):
        if x <= xs[k]:
            t = (x - xs[k - 1]) / (xs[k] - xs[k - 1])
            return ys[k - 1] + t * (ys[k] - ys[k - 1])
    return ys[-1]


def time_module(module: nn.Module, x: torch.Tensor) -> float:
    """Milliseconds of one ``module(x)`` pass (the table calls it ``runs`` times per variant, interleaved)."""
    with torch.inference_mode():
        start = perf_counter()
        module(x)
        return (perf_counter() - start) * 1000.0


def build_latency_table(
    model: nn.Module,
    example_inputs: ModelInputs,
    groups: Mapping[str, Sequence[tuple[str, str]]],
    *,
    ratios: Sequence[float] = DEFAULT_KEEP_RATIOS,
    round_to: int = 1,
    runtime: str = "torch-eager",
    threads: int | None = None,
    runs: int = 7,
    warmup: int = 2,
    cache: Path | str | None = None,
    time_fn: TimeFn | None = None,
    calibrate: bool = False,
) -> LatencyTable:
    """Time every Conv / Linear that ``model`` runs on ``example_inputs`` at the width grid of its groups.

    ``groups`` maps a group name to its members ``(module path, "in" | "out")``. ``cache``: the
    cache directory (default :func:`latency_cache_dir`). ``time_fn(module, x) -> ms`` times one
    pass of one variant (default :func:`time_module`). A layer's variants are timed round-robin,
    ``runs`` rounds after ``warmup`` untimed passes each, so load drifting over seconds hits every
    width alike; each entry is the median of its rounds. Threads are fixed to ``threads`` (default:
    torch's current count) while timing and are part of the cache key.

    ``calibrate``: a layer timed alone runs faster than inside the model (there every op writes a
    freshly allocated activation, the previous layer's output is not in cache, ...), most on large
    feature maps. The dense model is run ``runs`` times with hooks timing each layer (with its
    followers) in place; each layer's curve is scaled by in-model / isolated time at full width,
    and the time outside every timed layer becomes ``other_ms``. Cached like the layers. Off by
    default: on MobileNetV2 (1 thread, shared CPU) it did not predict whole-model ratios of random
    widths better than the isolated times (docs/benchmarks/latency_allocation.md).
    """
    if isinstance(runs, bool) or not isinstance(runs, int) or runs < 1:
        raise ConfigError(f"runs = {runs!r}: must be an integer >= 1")
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise ConfigError(f"warmup = {warmup!r}: must be an integer >= 0")
    if runtime not in RUNTIMES:
        raise ConfigError(f"runtime = {runtime!r}: the latency table times layers in {list(RUNTIMES)}")
    if not ratios or any(not 0 < r <= 1 for r in ratios):
        raise ConfigError(f"ratios = {list(ratios)!r}: every kept fraction must be in (0, 1]")
    n_threads = torch.get_num_threads() if threads is None else threads
    sides = _sides(model, groups)
    shapes = _input_shapes(model, example_inputs)
    full = _full_widths(model, groups, sides)
    root = Path(cache) if cache is not None else latency_cache_dir()
    layers = []
    timing = _Timing(time_fn or time_module, runs, warmup)
    with _num_threads(n_threads):
        for path, shape in shapes.items():
            module = model.get_submodule(path)
            layers.append(_layer_table(model, path, module, shape, sides.get(path, {}), full, ratios, round_to,
                                       runtime, n_threads, root, timing))
        table = LatencyTable(layers, full, runtime, n_threads, torch.__version__)
        if calibrate:
            _calibrate(model, example_inputs, table, timing, root)
    return table


@dataclasses.dataclass
class _Timing:
    fn: TimeFn
    runs: int
    warmup: int


def _sides(model: nn.Module, groups: Mapping[str, Sequence[tuple[str, str]]]) -> dict[str, dict[str, str]]:
    """``{layer path: {"in"|"out": group}}`` for every Conv / Linear side a group drives."""
    out: dict[str, dict[str, str]] = {}
    for g, members in groups.items():
        for path, side in members:
            if side not in ("in", "out"):
                raise ConfigError(f"groups[{g!r}]: side {side!r} of {path!r} must be 'in' or 'out'")
            if isinstance(model.get_submodule(path), _LAYERS):
                out.setdefault(path, {})[side] = g
    return out


def _full_widths(model: nn.Module, groups: Mapping[str, Sequence[tuple[str, str]]],
                 sides: dict[str, dict[str, str]]) -> dict[str, int]:
    """Each group's full width: its narrowest member side (a wider one must be a whole multiple, e.g.
    a Linear reading the group's channels flattened over H x W)."""
    full: dict[str, int] = {}
    for path, by_side in sides.items():
        for side, g in by_side.items():
            full[g] = min(full.get(g, 1 << 62), _width(model.get_submodule(path), side))
    for path, by_side in sides.items():
        for side, g in by_side.items():
            n = _width(model.get_submodule(path), side)
            if n % full[g]:
                raise UnsupportedModelError(f"group {g!r}: {path} has {n} {side}put units, not a multiple of the "
                                            f"group's {full[g]}")
    missing = sorted(set(groups) - set(full))
    if missing:
        raise UnsupportedModelError(f"group(s) {missing} drive no Conv / Linear layer: nothing to time")
    return full


def _width(module: nn.Module, side: str) -> int:
    if isinstance(module, nn.Linear):
        return module.in_features if side == "in" else module.out_features
    return module.in_channels if side == "in" else module.out_channels


def _input_shapes(model: nn.Module, example_inputs: ModelInputs) -> dict[str, tuple[int, ...]]:
    """Input shape of every Conv / Linear the forward pass reaches, in call order (first call)."""
    shapes: dict[str, tuple[int, ...]] = {}

    def record(name: str) -> Callable[[nn.Module, tuple[Any, ...]], None]:
        def hook(_m: nn.Module, inputs: tuple[Any, ...]) -> None:
            shapes.setdefault(name, tuple(inputs[0].shape))  # returns None: the inputs stay as they are
        return hook

    hooks = [m.register_forward_pre_hook(record(n)) for n, m in model.named_modules() if isinstance(m, _LAYERS)]
    was = model.training
    model.eval()
    try:
        run_with_hooks(model, [example_inputs], hooks)
    finally:
        model.train(was)
    return shapes


def _followers(model: nn.Module, path: str, out_units: int) -> list[str]:
    """BatchNorm and activation directly after ``path`` inside its parent ``nn.Sequential``."""
    parent_path, _, child = path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    if not isinstance(parent, nn.Sequential):
        return []
    names = [n for n, _ in parent.named_children()]
    out = []
    for n in names[names.index(child) + 1:]:
        m = getattr(parent, n)
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.num_features == out_units and not out:
            out.append(n)
        elif isinstance(m, _FOLLOWERS):
            out.append(n)
            break
        else:
            break
    return [f"{parent_path}.{n}" if parent_path else n for n in out]


def _layer_table(model: nn.Module, path: str, module: nn.Module, shape: tuple[int, ...], by_side: dict[str, str],
                 full: dict[str, int], ratios: Sequence[float], round_to: int, runtime: str, threads: int,
                 root: Path, timing: _Timing) -> LayerTable:
    """Load one layer's times from the cache or measure (and cache) them."""
    depthwise = isinstance(module, nn.modules.conv._ConvNd) and module.groups > 1 and \
        module.groups == module.in_channels == module.out_channels
    if isinstance(module, nn.modules.conv._ConvNd) and module.groups > 1 and not depthwise and by_side:
        raise UnsupportedModelError(f"{path}: grouped conv (groups={module.groups}) that is not depthwise; "
                                    "the latency table times depthwise and dense convs only")
    in_g, out_g = by_side.get("in"), by_side.get("out")
    if depthwise:
        out_g = out_g or in_g
        in_g = out_g
    n_in, n_out = _width(module, "in"), _width(module, "out")
    f_in = n_in // full[in_g] if in_g else 1
    f_out = n_out // full[out_g] if out_g else 1
    in_w = [w * f_in for w in width_grid(full[in_g], ratios, round_to)] if in_g else [n_in]
    out_w = [w * f_out for w in width_grid(full[out_g], ratios, round_to)] if out_g else [n_out]
    followers = _followers(model, path, n_out)
    key = _key(module, shape, followers, model, depthwise, in_w, out_w, runtime, threads)
    key["runs"] = timing.runs
    raw = _read_cache(root, key)
    measured = raw is None
    if raw is None:
        raw = _measure(module, [model.get_submodule(f) for f in followers], shape, depthwise, in_w, out_w, timing)
        _write_cache(root, key, raw)
    return LayerTable(path, followers, in_g, out_g, depthwise, in_w, out_w, _monotone(raw), measured, key=key,
                      in_factor=f_in, out_factor=f_out)


def _calibrate(model: nn.Module, example_inputs: ModelInputs, table: LatencyTable, timing: _Timing, root: Path) -> None:
    """Scale every layer to its in-model time and set ``other_ms`` (measured once, then cached)."""
    key = {"calibration": [t.key for t in table.layers], "paths": [[t.path, t.followers] for t in table.layers],
           "runs": timing.runs}
    record = _read_json(root, key)
    if record is None:
        insitu, total = _in_model_ms(model, example_inputs, table.layers, timing)
        record = {"insitu": insitu, "total": total}
        _write_json(root, key, record)
    for t in table.layers:
        iso = t.ms[-1][-1]
        t.scale = float(record["insitu"][t.path]) / iso if iso > 0 else 1.0
        t.ms = [[v * t.scale for v in row] for row in t.ms]
    table.other_ms = max(float(record["total"]) - sum(float(v) for v in record["insitu"].values()), 0.0)


def _in_model_ms(model: nn.Module, example_inputs: ModelInputs, layers: list[LayerTable],
                 timing: _Timing) -> tuple[dict[str, float], float]:
    """Median in-model ms of each layer (its pre-hook to its last follower's hook; first call per
    pass) and of the whole pass, over ``timing.runs`` passes after ``timing.warmup``."""
    starts: dict[str, float] = {}
    current: dict[str, float] = {}
    spans: dict[str, list[float]] = {t.path: [] for t in layers}

    def begin(p: str) -> Callable[..., None]:
        def hook(_m: nn.Module, _i: Any) -> None:
            starts.setdefault(p, perf_counter())
        return hook

    def end(p: str) -> Callable[..., None]:
        def hook(_m: nn.Module, _i: Any, _o: Any) -> None:
            if p in starts and p not in current:
                current[p] = (perf_counter() - starts[p]) * 1000.0
        return hook

    hooks = [model.get_submodule(t.path).register_forward_pre_hook(begin(t.path)) for t in layers]
    hooks += [model.get_submodule((t.followers or [t.path])[-1]).register_forward_hook(end(t.path)) for t in layers]
    totals = []
    was = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for k in range(timing.warmup + timing.runs):
                starts.clear()
                current.clear()
                start = perf_counter()
                call_model(model, example_inputs)
                if k >= timing.warmup:
                    totals.append((perf_counter() - start) * 1000.0)
                    for p, v in current.items():
                        spans[p].append(v)
    finally:
        model.train(was)
        for h in hooks:
            h.remove()
    missing = [p for p, v in spans.items() if not v]
    if missing:
        raise UnsupportedModelError(f"latency calibration: {missing[:3]} got no in-model timing")
    return {p: statistics.median(v) for p, v in spans.items()}, statistics.median(totals)


def _key(module: nn.Module, shape: tuple[int, ...], followers: list[str], model: nn.Module, depthwise: bool,
         in_w: list[int], out_w: list[int], runtime: str, threads: int) -> dict[str, Any]:
    """Everything a layer's times depend on (the cache key)."""
    spec: dict[str, Any] = {"type": type(module).__name__, "bias": getattr(module, "bias", None) is not None}
    if isinstance(module, nn.modules.conv._ConvNd):
        spec.update(kernel=list(module.kernel_size), stride=list(module.stride), padding=str(module.padding),
                    dilation=list(module.dilation), padding_mode=module.padding_mode)
    p = next(module.parameters(), None)
    return {"layer": spec, "input_shape": list(shape), "depthwise": depthwise, "in_widths": in_w, "out_widths": out_w,
            "followers": [type(model.get_submodule(f)).__name__ for f in followers], "runtime": runtime,
            "threads": threads, "torch": torch.__version__, "dtype": str(p.dtype if p is not None else torch.float32),
            "device": str(p.device if p is not None else "cpu"), "version": 1}


def _variant(module: nn.Module, followers: list[nn.Module], c_in: int, c_out: int, depthwise: bool) -> nn.Module:
    """A fresh layer of the same kind at ``c_in`` -> ``c_out`` units, with fresh followers, in eval mode."""
    p = next(module.parameters())
    bias = getattr(module, "bias", None) is not None
    if isinstance(module, nn.Linear):
        layer: nn.Module = nn.Linear(c_in, c_out, bias=bias)
    else:
        layer = type(module)(c_in, c_out, module.kernel_size, stride=module.stride, padding=module.padding,
                             dilation=module.dilation, groups=c_out if depthwise else module.groups, bias=bias,
                             padding_mode=module.padding_mode)
    parts = [layer]
    for f in followers:
        parts.append(type(f)(c_out) if isinstance(f, nn.modules.batchnorm._BatchNorm) else copy.deepcopy(f))
    return nn.Sequential(*parts).to(device=p.device, dtype=p.dtype).eval()


def _measure(module: nn.Module, followers: list[nn.Module], shape: tuple[int, ...], depthwise: bool,
             in_w: list[int], out_w: list[int], timing: _Timing) -> list[list[float]]:
    """Raw median ms at every grid point (depthwise: the diagonal, ``ms[i][j]`` = diagonal at ``min(i, j)``)."""
    p = next(module.parameters())
    points = [(i, j) for i in range(len(in_w)) for j in range(len(out_w)) if not depthwise or i == j]
    inputs = {}
    for i, c in enumerate(in_w):  # one input per input width, shared by that row's variants
        dims = list(shape)
        dims[-1 if isinstance(module, nn.Linear) else 1] = c
        inputs[i] = torch.randn(*dims, device=p.device, dtype=p.dtype)
    variants = {(i, j): (_variant(module, followers, in_w[i], out_w[j], depthwise), inputs[i]) for i, j in points}
    with torch.inference_mode():
        for m, x in variants.values():
            for _ in range(timing.warmup):
                m(x)
    times: dict[tuple[int, int], list[float]] = {pt: [] for pt in points}
    for _ in range(timing.runs):
        for pt, (m, x) in variants.items():
            times[pt].append(float(timing.fn(m, x)))
    ms = [[0.0] * len(out_w) for _ in in_w]
    for (i, j), t in times.items():
        ms[i][j] = statistics.median(t)
    if depthwise:
        ms = [[ms[min(i, j)][min(i, j)] for j in range(len(out_w))] for i in range(len(in_w))]
    return ms


def _monotone(raw: list[list[float]]) -> list[list[float]]:
    """The largest table below ``raw`` that never predicts a narrower layer slower than a wider one.

    ``ms[i][j] = min(raw[i'][j'] for i' >= i, j' >= j)``. Timing noise on a shared machine only
    ever adds time, so a spike is cut by a wider variant's faster measurement instead of being
    spread (as a running maximum would) over every wider width.
    """
    ms = [list(r) for r in raw]
    for i in reversed(range(len(ms))):
        for j in reversed(range(len(ms[i]))):
            below = [ms[i][j]]
            if i + 1 < len(ms):
                below.append(ms[i + 1][j])
            if j + 1 < len(ms[i]):
                below.append(ms[i][j + 1])
            ms[i][j] = min(below)
    return ms


def _cache_file(root: Path, key: dict[str, Any]) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32]
    return root / f"{digest}.json"


def _read_json(root: Path, key: dict[str, Any]) -> dict[str, Any] | None:
    """The cached record for ``key``, or None (missing, unreadable, or written for another key)."""
    try:
        record = json.loads(_cache_file(root, key).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and record.get("key") == key else None


def _read_cache(root: Path, key: dict[str, Any]) -> list[list[float]] | None:
    """The cached raw times for ``key``, or None (missing, unreadable, another key, or malformed)."""
    record = _read_json(root, key)
    if record is None:
        return None
    ms = record.get("ms")
    ok = isinstance(ms, list) and len(ms) == len(key["in_widths"]) and all(
        isinstance(r, list) and len(r) == len(key["out_widths"]) and all(isinstance(v, (int, float)) for v in r) for r in ms)
    return ms if ok else None


def _write_cache(root: Path, key: dict[str, Any], ms: list[list[float]]) -> None:
    _write_json(root, key, {"ms": ms})


def _write_json(root: Path, key: dict[str, Any], record: dict[str, Any]) -> None:
    """Write ``{"key": key, **record}`` atomically: a temporary file beside the target, then ``os.replace``."""
    root.mkdir(parents=True, exist_ok=True)
    target = _cache_file(root, key)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=root)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump({"key": key, **record}, handle)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def _num_threads(n: int) -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
