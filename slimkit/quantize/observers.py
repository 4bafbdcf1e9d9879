"""Range observers for post-training quantization: min-max, percentile and MSE.

An observer watches tensors (calibration activations, or a weight once) and proposes the real
range ``[lo, hi]`` that the integer grid should cover, either per tensor (``lo``/``hi`` of shape
``[1]``) or per channel along ``axis`` (shape ``[channels]``). :func:`qparams` then turns a range
into a scale and zero point for a symmetric (signed) or asymmetric (unsigned) grid.

* ``minmax``: the extreme values seen; never clips, but one outlier stretches the grid.
* ``percentile``: the ``percentile``-th quantile of the values (per batch, averaged over batches);
  clips rare outliers for finer resolution of the bulk.
* ``mse``: searches clipping ratios (1 down to 0.02, geometric) of the min-max range and keeps the one with the smallest
  quantize→dequantize mean squared error on a sample of the observed values.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Protocol

import torch

from slimkit.core.errors import ConfigError, DataError

__all__ = [
    "OBSERVERS", "Observer", "MinMaxObserver", "PercentileObserver", "MSEObserver",
    "make_observer", "qparams", "fake_quantize", "observe_layers", "tail_quantile",
]

#: at most this many values per channel are kept by the MSE observer (a random sample beyond)
_MSE_SAMPLE = 1 << 16
#: at most this many values per batch go into torch.quantile (its input limit is 2**24)
_QUANTILE_SAMPLE = 1 << 22


class Observer(Protocol):
    #: what is observed, e.g. ``"input of layer 'fc1'"`` (set by :func:`observe_layers`), for errors
    label: str | None

    def update(self, x: torch.Tensor) -> None: ...
    def range(self) -> tuple[torch.Tensor, torch.Tensor]: ...


def _no_data(label: str | None) -> DataError:
    """The error of an observer asked for a range before it saw any tensor (a layer the
    calibration batches never reached: unused, or behind a branch the data did not take)."""
    what = label or "a tensor (no layer name given)"
    return DataError(f"the observer of {what} saw no data: the calibration batches never reached it; "
                     "check that calib exercises this layer, or leave it out with ignore: [...]")


def _channels_first(x: torch.Tensor, axis: int | None) -> torch.Tensor:
    """``[channels, n]`` view of ``x`` (``[1, numel]`` when per tensor)."""
    x = x.detach().float()
    if axis is None:
        return x.reshape(1, -1)
    return x.movedim(axis, 0).reshape(x.shape[axis], -1)


class MinMaxObserver:
    """Running min and max over everything observed."""

    def __init__(self, axis: int | None = None, label: str | None = None) -> None:
        self.axis, self.label = axis, label
        self.lo: torch.Tensor | None = None
        self.hi: torch.Tensor | None = None

    def update(self, x: torch.Tensor) -> None:
        c = _channels_first(x, self.axis)
        lo, hi = c.amin(dim=1), c.amax(dim=1)
        self.lo = lo if self.lo is None else torch.minimum(self.lo, lo)
        self.hi = hi if self.hi is None else torch.maximum(self.hi, hi)

    def range(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.lo is None or self.hi is None:
            raise _no_data(self.label)
        return self.lo, self.hi


#: a quantile whose tail holds more than this share of the values is left to torch.quantile
_TAIL_SHARE = 1.0 / 16


def tail_quantile(c: torch.Tensor, q: float) -> torch.Tensor:
    """The ``q`` quantile of each row of ``c`` (``[channels, n]``), equal to ``torch.quantile``'s
    linear interpolation, read from the few values in the nearer tail with ``torch.topk``.

    Calibration asks for q = 0.9999 of millions of activations per batch: sorting all of them (what
    ``torch.quantile`` does) dominated static int8 calibration of a CNN (minutes for MobileNetV2);
    the tail holds only n * (1 - q) values, which topk finds in one pass.
    """
    n = c.shape[1]
    pos = q * (n - 1)
    lo_i = int(pos)  # sorted index below the quantile; interpolate towards lo_i + 1
    frac = pos - lo_i
    upper = q >= 0.5
    k = n - lo_i if upper else lo_i + 2  # values needed from the nearer end, both neighbours included
    if k > n * _TAIL_SHARE or k > n:
        return torch.quantile(c, torch.tensor(q), dim=1)
    vals = torch.topk(c, k, dim=1, largest=upper, sorted=True).values
    if upper:  # descending: sorted[lo_i] is the last taken, sorted[lo_i + 1] the one before it
        below, above = vals[:, k - 1], vals[:, max(k - 2, 0)]
    else:  # ascending: sorted[lo_i] at lo_i, sorted[lo_i + 1] at lo_i + 1
        below, above = vals[:, lo_i], vals[:, min(lo_i + 1, k - 1)]
    return below + frac * (above - below)


class PercentileObserver:
    """Lower/upper ``percentile`` quantiles per batch, averaged over the batches."""

    def __init__(self, axis: int | None = None, percentile: float = 99.99, label: str | None = None) -> None:
        self.axis, self.q, self.label = axis, percentile / 100.0, label
        self._lo: list[torch.Tensor] = []
        self._hi: list[torch.Tensor] = []

    def update(self, x: torch.Tensor) -> None:
        c = _channels_first(x, self.axis)
        if c.shape[1] > _QUANTILE_SAMPLE:  # torch.quantile refuses > 2**24 values
            idx = torch.randint(0, c.shape[1], (_QUANTILE_SAMPLE,), generator=torch.Generator().manual_seed(0))
            c = c[:, idx]
        self._lo.append(tail_quantile(c, 1.0 - self.q))
        self._hi.append(tail_quantile(c, self.q))

    def range(self) -> tuple[torch.Tensor, torch.Tensor]:
        if not self._lo:
            raise _no_data(self.label)
        return torch.stack(self._lo).mean(0), torch.stack(self._hi).mean(0)


class MSEObserver:
    """Min-max range shrunk by the ratio (searched on a grid) that minimises quantization MSE."""

    def __init__(self, axis: int | None = None, bits: int = 8, symmetric: bool = True, grid: int = 60,
                 label: str | None = None) -> None:
        self.axis, self.bits, self.symmetric, self.grid, self.label = axis, bits, symmetric, grid, label
        self.minmax = MinMaxObserver(axis)
        self._samples: list[torch.Tensor] = []

    def update(self, x: torch.Tensor) -> None:
        self.minmax.update(x)
        c = _channels_first(x, self.axis)
        if c.shape[1] > _MSE_SAMPLE:
            idx = torch.randint(0, c.shape[1], (_MSE_SAMPLE,), generator=torch.Generator().manual_seed(len(self._samples)))
            c = c[:, idx]
        self._samples.append(c)

    def range(self) -> tuple[torch.Tensor, torch.Tensor]:
        if not self._samples:
            raise _no_data(self.label)
        lo, hi = self.minmax.range()
        data = torch.cat(self._samples, dim=1)  # [channels, n]
        best_err = torch.full_like(lo, float("inf"))
        best = torch.ones_like(lo)
        for i in range(self.grid):
            ratio = 0.02 ** (i / (self.grid - 1))  # geometric grid from 1.0 down to 0.02
            scale, zero = qparams(lo * ratio, hi * ratio, self.bits, self.symmetric)
            err = (fake_quantize(data, scale.unsqueeze(1), zero.unsqueeze(1), self.bits, self.symmetric) - data)
            err = err.pow(2).mean(dim=1)
            better = err < best_err
            best_err = torch.where(better, err, best_err)
            best = torch.where(better, torch.full_like(best, ratio), best)
        return lo * best, hi * best


#: observer names accepted in recipes
OBSERVERS = ("minmax", "percentile", "mse")


def make_observer(name: str, axis: int | None = None, *, percentile: float = 99.99, bits: int = 8,
                  symmetric: bool = True) -> Observer:
    """An observer by recipe name; ``axis=None`` observes per tensor, an int per channel along it."""
    if name == "minmax":
        return MinMaxObserver(axis)
    if name == "percentile":
        return PercentileObserver(axis, percentile)
    if name == "mse":
        return MSEObserver(axis, bits, symmetric)
    raise ConfigError(f"observer = {name!r} is not valid; choose one of {list(OBSERVERS)}")


def _labelled(observer: Observer, label: str) -> Observer:
    observer.label = label
    return observer


def qparams(lo: torch.Tensor, hi: torch.Tensor, bits: int = 8, symmetric: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale and zero point covering ``[lo, hi]``.

    Symmetric: signed grid ``[-(2^(b-1)-1), 2^(b-1)-1]``, zero point 0, ``scale = max(|lo|,|hi|) / qmax``.
    Asymmetric: unsigned grid ``[0, 2^b - 1]`` with the range widened to include 0 (so that 0 is
    exact, as padding and ReLU outputs need), ``zero = round(-lo / scale)``.
    """
    lo, hi = lo.float(), hi.float()
    if symmetric:
        qmax = 2 ** (bits - 1) - 1
        scale = (torch.maximum(lo.abs(), hi.abs()) / qmax).clamp_min(1e-12)
        return scale, torch.zeros_like(scale, dtype=torch.int64)
    lo, hi = lo.clamp(max=0.0), hi.clamp(min=0.0)
    qmax = 2**bits - 1
    scale = ((hi - lo) / qmax).clamp_min(1e-12)
    zero = torch.round(-lo / scale).clamp(0, qmax).to(torch.int64)
    return scale, zero


def fake_quantize(x: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, bits: int = 8,
                  symmetric: bool = True) -> torch.Tensor:
    """Quantize then dequantize ``x`` on the grid of :func:`qparams` (scale/zero broadcast to x)."""
    if symmetric:
        qmax = 2 ** (bits - 1) - 1
        return torch.round(x / scale).clamp(-qmax, qmax) * scale
    qmax = 2**bits - 1
    return (torch.round(x / scale) + zero).clamp(0, qmax).sub(zero) * scale


def observe_layers(model: torch.nn.Module, layers: dict[str, torch.nn.Module], factory: Callable[[], Observer],
                   batches: Iterable[Any], *, outputs: bool = False) -> dict[str, tuple[Observer, Observer | None]]:
    """Run ``batches`` through ``model`` and feed each named layer's input (and output) to observers.

    Returns ``{name: (input_observer, output_observer or None)}``; hooks are removed afterwards.
    Each observer is labelled with its layer, so a layer the batches never reached is named in the
    :class:`DataError` its ``range()`` raises.
    """
    from slimkit.core.inputs import run_with_hooks

    seen: dict[str, tuple[Observer, Observer | None]] = {
        name: (_labelled(factory(), f"the input of layer {name!r}"),
               _labelled(factory(), f"the output of layer {name!r}") if outputs else None) for name in layers}

    def hook(name: str) -> Callable[..., None]:
        def fn(module: torch.nn.Module, args: tuple[Any, ...], out: torch.Tensor) -> None:
            obs_in, obs_out = seen[name]
            obs_in.update(args[0])
            if obs_out is not None:
                obs_out.update(out)
        return fn

    run_with_hooks(model, batches, [m.register_forward_hook(hook(n)) for n, m in layers.items()])
    return seen
