"""Student spaces for architecture search (NAS for students): students derived from the teacher.

A candidate student is the teacher itself made smaller, DistilBERT style (so it starts close to
it), then distilled from the untouched teacher for a short while (the search's fidelity):

* **depth**: how many blocks of the teacher's block stack stay, evenly spread (``d`` of ``n``
  keeps blocks ``floor(i * n / d)``; half the depth is DistilBERT's every other layer), as the
  ``distill`` step's ``keep_layers``;
* **width**: the fraction of MLP neurons (transformers) or conv channels (CNNs) kept, as the
  ``distill`` step's ``shrink_width`` (``1 - width``; structured pruning by magnitude);
* **heads**: the fraction of attention heads kept in every attention layer, as a structured
  ``prune`` step with ``granularity: head`` before the distillation (none at 1.0).

:func:`student_space` writes these knobs as an ordinary search space (a dict for ``sk.search``,
or YAML), with ``eval_every`` on the distillation so a pruner (successive halving by default,
:mod:`slimkit.search.recipes.pruning`) can stop weak students after a few steps. Each found
recipe is an ordinary ``prune`` + ``distill`` recipe that replays with ``sk.compress``.

```python
space = student_space(teacher, depths=[2, 3, 4], widths=[0.5, 0.75, 1.0], steps=200,
                      eval_every=25, distill={"method": "logit", "lr": 1e-3})
sr = sk.search(teacher, space, train=train, eval=sk.Accuracy(val), example_inputs=x,
               objectives=("quality", "latency"), n_trials=30)
```
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from torch import nn

from slimkit.core.errors import ConfigError

__all__ = ["student_space", "depth_layers"]

#: ``distill`` options the student knobs set themselves (not accepted in ``distill=``)
_OWNED = ("keep_every", "keep_layers", "shrink_width", "steps", "eval_every", "epochs")


def depth_layers(n_blocks: int, depth: int) -> list[int]:
    """The ``depth`` block indices of ``n_blocks`` kept, evenly spread: ``floor(i * n / depth)``."""
    return [(i * n_blocks) // depth for i in range(depth)]


def student_space(teacher: nn.Module, *, depths: Sequence[int] | None = None,
                  widths: Sequence[float] = (0.5, 0.75, 1.0), heads: Sequence[float] = (1.0,),
                  steps: int = 200, eval_every: int = 25, distill: dict[str, Any] | None = None,
                  pruner: Any = "successive_halving") -> dict[str, Any]:
    """A search space of students of ``teacher`` (see the module docstring).

    ``depths``: numbers of blocks kept (default: the full depth, three quarters, half, a quarter);
    ``widths``: kept fractions of MLP neurons / conv channels in (0, 1]; ``heads``: kept fractions
    of attention heads in (0, 1] (only for models with a ``config.num_attention_heads``);
    ``steps`` / ``eval_every``: the distillation's optimizer steps and its rung spacing;
    ``distill``: its other fixed options (``method``, ``lr``, ``temperature``, ...);
    ``pruner``: ``successive_halving`` / ``hyperband`` / ``none`` or a mapping. Every bad value is
    a :class:`~slimkit.core.errors.ConfigError` naming it.
    """
    from slimkit.surgery.blocks import find_blocks

    blocks = find_blocks(teacher)
    n = len(blocks)
    depth_choice = _depths(depths, n, blocks.path, set(blocks.droppable))
    width_choice = _fractions("widths", widths, "kept fraction of MLP neurons / conv channels")
    head_choice = _heads(teacher, heads)
    options = _distill_options(distill)
    for name, value, lo in (("steps", steps, 1), ("eval_every", eval_every, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < lo:
            raise ConfigError(f"{name} = {value!r} must be an integer >= {lo}")
    if eval_every > steps:
        raise ConfigError(f"eval_every = {eval_every} is more than steps = {steps}: the distillation would never "
                          "report its quality")
    knobs: dict[str, Any] = dict(options)
    knobs.update({"steps": steps, "eval_every": eval_every,
                  "keep_layers": _knob([depth_layers(n, d) for d in depth_choice]),
                  "shrink_width": _knob([None if w == 1.0 else round(1.0 - w, 6) for w in width_choice])})
    out: dict[str, Any] = {"steps": []}
    cuts = [round(1.0 - h, 6) for h in head_choice if h != 1.0]
    if cuts:
        method = ["none", "structured"] if 1.0 in head_choice else ["structured"]
        out["steps"].append({"prune": {"method": _knob(method), "granularity": "head",
                                       "sparsity": _knob(cuts) if len(method) == 1 else
                                       {"choice": cuts, "when": {"method": "structured"}}}})
    out["steps"].append({"distill": knobs})
    if pruner is not None:
        out["pruner"] = pruner
    return out


def _knob(values: list[Any]) -> Any:
    return values[0] if len(values) == 1 else {"choice": values}


def _depths(depths: Sequence[int] | None, n: int, path: str, droppable: set[int]) -> list[int]:
    if depths is None:
        depths = sorted({n, max(1, (3 * n) // 4), max(1, n // 2), max(1, n // 4)}, reverse=True)
    values = _non_empty("depths", depths)
    for d in values:
        if isinstance(d, bool) or not isinstance(d, int) or not 1 <= d <= n:
            raise ConfigError(f"depths: {d!r} is not a number of blocks to keep; the teacher's {path} has {n} "
                              f"blocks (valid: integers 1..{n})")
        dropped = sorted(set(range(n)) - set(depth_layers(n, d)) - droppable)
        if dropped:
            raise ConfigError(f"depths: {d} would remove blocks {dropped} of {path}, which change the tensor shape "
                              "and cannot be removed")
    return list(dict.fromkeys(values))


def _fractions(name: str, values: Sequence[float], what: str) -> list[float]:
    out = _non_empty(name, values)
    for v in out:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not 0.0 < v <= 1.0:
            raise ConfigError(f"{name}: {v!r} is not a {what} (valid: numbers in (0, 1], 1.0 = the teacher's)")
    return list(dict.fromkeys(float(v) for v in out))


def _heads(teacher: nn.Module, heads: Sequence[float]) -> list[float]:
    fractions = _fractions("heads", heads, "kept fraction of attention heads")
    if fractions == [1.0]:
        return fractions
    n_heads = getattr(getattr(teacher, "config", None), "num_attention_heads", None)
    if not isinstance(n_heads, int):
        raise ConfigError(f"heads = {list(heads)!r}: {type(teacher).__name__} has no attention heads "
                          "(config.num_attention_heads); valid: heads=[1.0]")
    for h in fractions:
        kept = n_heads - math.floor(round((1.0 - h) * n_heads, 6))
        if kept < 1:
            raise ConfigError(f"heads: {h!r} keeps no head of {n_heads}; valid: fractions >= {1 / n_heads:.4g}")
    return fractions


def _distill_options(distill: dict[str, Any] | None) -> dict[str, Any]:
    options = dict(distill or {})
    owned = sorted(set(options) & set(_OWNED))
    if owned:
        raise ConfigError(f"distill: {owned} are set by the student knobs (depths, widths, steps, eval_every); "
                          "remove them from distill=")
    options.setdefault("method", "logit")
    return options


def _non_empty(name: str, values: Any) -> list[Any]:
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or not values:
        raise ConfigError(f"{name} = {values!r} must be a non-empty list")
    return list(values)
