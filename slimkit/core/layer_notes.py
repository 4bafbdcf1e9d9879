"""A compact per-layer summary for a step's notes: which layers kept which precision or sparsity.

A 30-block model has hundreds of layers; listing each one would drown the report. Layers that
differ only by their block index (``model.layers.0.mlp.up_proj``, ``model.layers.1.mlp.up_proj``,
...) are folded into one key (``model.layers.*.mlp.up_proj``):

* the same text value everywhere: ``"int4 g64 ×30"``;
* different text values: each value with the block indices holding it, ``"int4: 0-4,6-29; int8: 5"``;
* numbers (sparsities): ``"0.5 ×30"`` when all equal, else ``"0.31–0.72 ×30"`` (min–max).

Layers outside repeated blocks (``lm_head``) keep their own key.
"""
from __future__ import annotations

import re
from collections import defaultdict

__all__ = ["layer_summary"]

_INDEX = re.compile(r"(?<=\.)\d+(?=\.|$)")  # a numeric path component after a parent (``layers.3``)


def _ranges(indices: list[str]) -> str:
    """``["0", "1", "2", "5"]`` -> ``"0-2,5"`` (non-integer index tuples are listed as they are)."""
    if not all(i.isdigit() for i in indices):
        return ",".join(indices)
    nums = sorted(int(i) for i in indices)
    parts, start, prev = [], nums[0], nums[0]
    for n in nums[1:] + [None]:
        if n is not None and n == prev + 1:
            prev = n
            continue
        parts.append(str(start) if start == prev else f"{start}-{prev}")
        if n is not None:
            start = prev = n
    return ",".join(parts)


def _fold(items: list[tuple[str, str | float]]) -> str:
    """One summary string for the layers sharing a folded key: ``(block index, value)`` pairs."""
    values = [v for _, v in items]
    count = f" ×{len(items)}" if len(items) > 1 else ""
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        lo, hi = min(values), max(values)  # type: ignore[type-var]
        return f"{lo:g}{count}" if lo == hi else f"{lo:g}–{hi:g}{count}"
    distinct = list(dict.fromkeys(str(v) for v in values))
    if len(distinct) == 1:
        return f"{distinct[0]}{count}"
    by_value: dict[str, list[str]] = defaultdict(list)
    for index, v in items:
        by_value[str(v)].append(index)
    return "; ".join(f"{v}: {_ranges(by_value[v])}" for v in distinct)


def layer_summary(values: dict[str, str | float]) -> dict[str, str]:
    """Fold ``{layer name: precision label or sparsity}`` over block indices (see the module doc)."""
    groups: dict[str, list[tuple[str, str | float]]] = defaultdict(list)
    for name, value in values.items():
        index = ".".join(_INDEX.findall(name))
        groups[_INDEX.sub("*", name)].append((index, value))
    return {key: _fold(items) for key, items in groups.items()}
