"""Bit-width levels for ``search`` over ``quantize: {method: gptq | rtn}``.

Each selected Linear (the output head and embeddings are not units: they stay at ``head_bits``,
a constant) gets one level per candidate bit width, level 0 the widest (default 8 / 4 / 3 / 2).
The level database is built ONCE, EvoPress-style: every layer is quantized at every width
independently, GPTQ from the *dense* model's calibration inputs (block by block, one block's
Hessians in memory at a time; the blocks are never modified, so each sees dense inputs), RTN from
the weight alone. Each level is kept as what the checkpoint stores (packed codes, float16 scales,
uint8 zeros), in memory or spilled to a temporary directory of safetensors files
(``level_storage``; ``auto``: disk above ``memory_limit_mb``); :meth:`QuantLevelSpace.apply`
dequantizes the changed layers into the model's float weights, bit-identical to what a
:class:`~slimkit.quantize.weight_only.layer.WeightOnlyLinear` computes with them.

Cost (``cost``):

* ``stored`` (default): the exact bytes the checkpoint stores for the layer at that width: packed
  codes ``rows * ceil(cols / codes_per_byte)`` (2 codes per byte at 3 *and* 4 bits, 4 at 2 bits,
  1 at 8 bits), float16 scales and, unless symmetric, uint8 zero points per group, plus the bias.
  Note that 3-bit codes are packed two per byte, so a 3-bit layer costs as many bytes as a 4-bit one.
* ``nominal``: bits as if codes were densely packed, ``rows * cols * bits`` plus the same scale /
  zero / bias bits: EvoPress's "average bits" accounting.

Budget: the cost of the wrapped step as written (every layer at its ``bits``), or, with
``target_avg_bits`` (``bits`` then only names the step), the largest assignment not above
``target_avg_bits`` average bits per weight (cost of all units / their weights, scales and zeros
included): every unit starts at the widest level whose uniform cost fits, then units are widened
one level at a time, in unit order, while the total still fits. The budget is that start's exact
cost (reported as ``avg_bits``), so the search keeps it exactly.

Budget-keeping switches: the search moves one unit one level and another unit one level the
other way with exactly the opposite cost change. Layers of the same shape (``q_proj``/``o_proj``,
``k_proj``/``v_proj``, ``gate_proj``/``up_proj`` and the same layer of every block) have equal
cost steps, so bits move between them; a width whose neighbour costs the same (3 vs 4 bits under
``stored``) moves freely.

```yaml
- search:
    method: evolution
    step: {quantize: {method: gptq, bits: 3, group_size: 128}}
    levels: [2, 3, 4, 8]      # candidate bit widths (default)
```
"""
from __future__ import annotations

import math
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from slimkit.core.context import RunContext
from slimkit.core.errors import ConfigError, UnsupportedModelError
from slimkit.core.sequential import run_blocks
from slimkit.quantize.gptq.core import HessianAccumulator, gptq_quantize
from slimkit.quantize.weight_only.apply import select_linears
from slimkit.quantize.weight_only.core import (
    codes_per_byte, dequantize_groups, n_groups, pack_codes, quantize_groups, unpack_codes,
)
from slimkit.quantize.weight_only.sequential import StatsHook, block_layers
from slimkit.search.space import SpaceOptions, register_space

__all__ = ["QuantLevelSpace", "quant_space", "layer_cost", "DEFAULT_BITS", "COST_MODELS"]

#: candidate bit widths when the search config gives no ``levels``
DEFAULT_BITS = (2, 3, 4, 8)
COST_MODELS = ("stored", "nominal")


def layer_cost(rows: int, cols: int, bits: int, group_size: int | None, symmetric: bool, bias: bool,
               cost: str = "stored") -> int:
    """Exact cost of one ``rows x cols`` weight-only layer: stored bytes (``stored``) or bits as if
    codes were densely packed (``nominal``); scales float16, zeros uint8 (asymmetric), bias float32."""
    groups = rows * n_groups(cols, group_size)
    extra_bytes = 2 * groups + (0 if symmetric else groups) + (4 * rows if bias else 0)
    if cost == "nominal":
        return rows * cols * bits + 8 * extra_bytes
    return rows * math.ceil(cols / codes_per_byte(bits)) + extra_bytes


class _QuantStore:
    """Packed codes / scales / zeros per (layer, level) and each layer's original weight, in memory or
    in one safetensors file per layer in a temporary directory (read back only for changed layers)."""

    def __init__(self, on_disk: bool) -> None:
        self.on_disk = on_disk
        self.memory: dict[str, dict[str, torch.Tensor]] = {}
        self.files: dict[str, Path] = {}
        self.dir = tempfile.TemporaryDirectory(prefix="slimkit-qlevels-") if on_disk else None
        self.bytes = 0

    def put(self, layer: str, tensors: dict[str, torch.Tensor]) -> None:
        tensors = {k: v.contiguous() for k, v in tensors.items()}
        self.bytes += sum(t.numel() * t.element_size() for t in tensors.values())
        if self.dir is None:
            self.memory[layer] = tensors
            return
        from safetensors.torch import save_file

        path = Path(self.dir.name) / f"{len(self.files)}.safetensors"
        save_file(tensors, str(path))
        self.files[layer] = path

    def get(self, layer: str, keys: Sequence[str]) -> list[torch.Tensor]:
        if self.dir is None:
            return [self.memory[layer][k] for k in keys]
        from safetensors import safe_open

        with safe_open(str(self.files[layer]), framework="pt") as f:
            return [f.get_tensor(k) for k in keys]

    def close(self) -> None:
        self.memory.clear()
        if self.dir is not None:
            self.dir.cleanup()
            self.dir = None


class QuantLevelSpace:
    """Level space over per-layer bit widths (see the module docstring)."""

    value_name = "bits"

    def __init__(self, step: Any, units: list[str], shapes: list[tuple[int, int, bool]], bits: list[int],
                 start: list[int], store: _QuantStore, cost: str = "stored", others: Sequence[str] = ()) -> None:
        cfg = step.config
        self.step, self.units, self.bits, self.store, self.cost_model = step, units, bits, store, cost
        self.group_size, self.symmetric = cfg.group_size, cfg.symmetric
        self.n_levels = [len(bits)] * len(units)
        self.shapes = shapes
        self.costs = [[layer_cost(r, c, b, cfg.group_size, cfg.symmetric, has_bias, cost) for b in bits]
                      for r, c, has_bias in shapes]
        self.n_weights = sum(r * c for r, c, _ in shapes)
        self.others = list(others)  # selected layers that are not units (never reached by calibration)
        self._start = list(start)
        self._current: dict[int, int | None] = {}

    def cost(self, unit: int, level: int) -> int:
        return self.costs[unit][level]

    def budget(self) -> int:
        return sum(self.cost(u, lvl) for u, lvl in enumerate(self._start))

    def uniform(self) -> list[int]:
        return list(self._start)

    def values(self, assignment: Sequence[int]) -> list[float]:
        return [float(self.bits[int(lvl)]) for lvl in assignment]

    def avg_bits(self, assignment: Sequence[int]) -> float:
        """Average bits per weight of the units (scales, zeros and bias included) under the cost model."""
        total = sum(self.cost(u, int(lvl)) for u, lvl in enumerate(assignment))
        return (total if self.cost_model == "nominal" else 8 * total) / max(self.n_weights, 1)

    def level_weight(self, unit: int, level: int) -> torch.Tensor:
        """The float32 weight of ``unit`` at ``level`` (dequantized from the stored codes)."""
        rows, cols, _ = self.shapes[unit]
        bits = self.bits[level]
        keys = [f"{level}.q", f"{level}.s"] + ([] if self.symmetric else [f"{level}.z"])
        got = dict(zip(keys, self.store.get(self.units[unit], keys)))
        return _dequantize_level(got, level, bits, cols, self.symmetric, self.group_size)

    def apply(self, model: nn.Module, assignment: Sequence[int]) -> None:
        with torch.no_grad():
            for u, lvl in enumerate(assignment):
                if self._current.get(u) == int(lvl):
                    continue
                weight = model.get_submodule(self.units[u]).weight
                weight.copy_(self.level_weight(u, int(lvl)).to(weight.dtype))
                self._current[u] = int(lvl)

    def restore(self, model: nn.Module) -> None:
        with torch.no_grad():
            for u in list(self._current):
                model.get_submodule(self.units[u]).weight.copy_(self.store.get(self.units[u], ["dense"])[0])
        self._current = {}

    def to_step(self, assignment: Sequence[int]) -> dict[str, Any]:
        (name, options), = self.step.to_dict().items()
        bits = {unit: int(b) for unit, b in zip(self.units, self.values(assignment))}
        bits.update({other: int(options["bits"]) for other in self.others})
        return {name: {**options, "bits": bits}}

    def close(self) -> None:
        self.store.close()


def _check_bits(levels: Any) -> list[int]:
    """The candidate widths, widest first (level 0 = least compressed)."""
    if levels is None:
        return sorted(DEFAULT_BITS, reverse=True)
    ok = isinstance(levels, (list, tuple)) and len(levels) >= 2 and all(
        isinstance(b, int) and not isinstance(b, bool) and 2 <= b <= 8 for b in levels)
    if not ok or len(set(levels)) != len(levels):
        raise ConfigError(f"levels = {levels!r}: for quantize, a list of at least 2 distinct bit widths, each an "
                          f"integer in [2, 8] (e.g. [2, 3, 4, 8])")
    return sorted(levels, reverse=True)


def _start(space_costs: list[list[int]], bits: list[int], uniform_bits: int | None, target: int | None,
           field: str) -> list[int]:
    """The search's starting assignment: the wrapped step's bits everywhere, or the widest fill not
    above ``target`` total cost (see the module docstring)."""
    n = len(space_costs)
    if target is None:
        if uniform_bits not in bits:
            raise ConfigError(f"levels = {sorted(bits)}: must include the wrapped step's bits = {uniform_bits!r}")
        return [bits.index(uniform_bits)] * n
    fits = [lvl for lvl in range(len(bits)) if sum(c[lvl] for c in space_costs) <= target]
    if not fits:
        raise ConfigError(f"{field} is below the narrowest level: every layer at {bits[-1]} bits already exceeds it")
    start = [min(fits)] * n
    total = sum(c[start[0]] for c in space_costs)
    widened = True
    while widened:
        widened = False
        for u in range(n):
            if start[u] > 0 and total - space_costs[u][start[u]] + space_costs[u][start[u] - 1] <= target:
                total += space_costs[u][start[u] - 1] - space_costs[u][start[u]]
                start[u] -= 1
                widened = True
    return start


def _level_codes(method: str, cfg: Any, weight: torch.Tensor, hessian: torch.Tensor | None,
                 bits: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    if method == "gptq":
        return gptq_quantize(weight, hessian, bits, cfg.group_size, cfg.symmetric, cfg.damp, cfg.act_order,
                             cfg.block_size, cfg.clip_search)
    return quantize_groups(weight.detach(), bits, cfg.group_size, cfg.symmetric, clip_search=cfg.clip_search)


def _dequantize_level(tensors: dict[str, torch.Tensor], level: int, bits: int, cols: int, symmetric: bool,
                      group_size: int) -> torch.Tensor:
    """The float32 weight of one stored level (``{level}.q`` / ``.s`` / ``.z`` tensors)."""
    scale = tensors[f"{level}.s"].float()
    zeros = torch.full(scale.shape, float(2 ** (bits - 1))) if symmetric else tensors[f"{level}.z"].float()
    return dequantize_groups(unpack_codes(tensors[f"{level}.q"], bits, cols), scale, zeros, group_size)


def _unit_tensors(method: str, cfg: Any, name: str, linear: nn.Linear, hessian: torch.Tensor | None,
                  bits: list[int]) -> dict[str, torch.Tensor]:
    """Stored tensors of every level of one layer, plus its original weight (``dense``)."""
    out = {"dense": linear.weight.detach().clone()}
    for lvl, b in enumerate(bits):
        try:
            codes, scale, zero = _level_codes(method, cfg, linear.weight, hessian, b)
        except RuntimeError as exc:
            raise UnsupportedModelError(f"layer {name!r}: {method} at {b} bits failed ({exc})") from None
        out[f"{lvl}.q"] = pack_codes(codes, b)
        out[f"{lvl}.s"] = scale.to(torch.float16)
        if not cfg.symmetric:
            out[f"{lvl}.z"] = zero.to(torch.uint8)
    return out


def _gptq_database(model: nn.Module, chosen: dict[str, nn.Linear], calib: list[Any], ctx: RunContext,
                   put: Any) -> list[str]:
    """Hessians of every chosen layer on the dense model's inputs, block by block; ``put(name, H)``
    per layer. Returns the layers no calibration block reached."""
    pending = dict(chosen)

    def visit(block_name: str, block: nn.Module, replay: Any) -> None:
        local = block_layers(block_name, block, pending)
        if not local:
            return
        hess = {n: HessianAccumulator(m.in_features) for n, m in local.items()}
        with StatsHook(local, lambda n, x: hess[n].add(x)):
            replay()
        for n in local:
            put(n, hess.pop(n).hessian())
            del pending[n]

    run_blocks(model, calib, visit, ctx.progress if ctx.show_progress else None)
    return sorted(pending)


def _on_disk(options: SpaceOptions, layers: list[tuple[str, nn.Linear]], bits: list[int]) -> bool:
    storage = getattr(options, "storage", "auto")
    if storage in ("memory", "disk"):
        return storage == "disk"
    estimate = sum(m.weight.numel() * (4 + sum(b / 8 for b in bits)) for _, m in layers)
    return estimate > getattr(options, "memory_limit_mb", 1024) * 2**20


@register_space("quantize", ("gptq", "rtn"))
def quant_space(model: nn.Module, step: Any, ctx: RunContext, options: SpaceOptions, *,
                target_avg_bits: float | None = None, cost: str | None = None) -> QuantLevelSpace:
    """Build the bit-width level database of every selected Linear (see the module docstring).

    ``target_avg_bits`` / ``cost`` come from the keywords or, when absent, from ``options``
    attributes of the same names (``None``: the wrapped step's ``bits`` / ``stored``).
    """
    cfg = step.config
    if isinstance(cfg.bits, dict):
        raise ConfigError(f"step.quantize.bits = {cfg.bits!r}: search needs one bit width (the uniform level)")
    bits = _check_bits(options.levels)
    cost = cost if cost is not None else getattr(options, "cost", None) or "stored"
    if cost not in COST_MODELS:
        raise ConfigError(f"cost = {cost!r} is not valid; choose one of {list(COST_MODELS)}")
    target_avg_bits = target_avg_bits if target_avg_bits is not None else getattr(options, "target_avg_bits", None)
    if target_avg_bits is not None and (isinstance(target_avg_bits, bool) or not isinstance(target_avg_bits, (int, float))
                                        or not 2 <= target_avg_bits <= 16):
        raise ConfigError(f"target_avg_bits = {target_avg_bits!r}: average bits per weight, a number in [2, 16]")
    layers = select_linears(model, cfg, ctx, "quantize")
    if not layers:
        raise UnsupportedModelError("search over quantize: the step selects no Linear layer")
    store = _QuantStore(_on_disk(options, layers, bits))
    chosen = dict(layers)

    sequential = options.database == "sequential"
    if cfg.bits not in bits and target_avg_bits is None:  # checked before the database is built
        raise ConfigError(f"levels = {sorted(bits)}: must include the wrapped step's bits = {cfg.bits!r}")
    if sequential and cfg.bits not in bits:
        raise ConfigError(f"database = 'sequential' runs later blocks on this step's bits = {cfg.bits!r}, which is not "
                          f"among levels = {sorted(bits)}; add it or use database: dense")

    changed: list[str] = []  # layers the sequential build set to the step's width (restored from "dense")

    def put(name: str, hessian: torch.Tensor | None) -> None:
        tensors = _unit_tensors(step.method, cfg, name, chosen[name], hessian, bits)
        store.put(name, tensors)
        if sequential:  # later blocks see this layer at the step's own width
            lvl, weight = bits.index(cfg.bits), chosen[name].weight
            changed.append(name)
            with torch.no_grad():
                weight.copy_(_dequantize_level(tensors, lvl, cfg.bits, weight.shape[1], cfg.symmetric,
                                               cfg.group_size).to(weight.dtype))

    others: list[str] = []
    try:
        if step.method == "gptq":
            others = _gptq_database(model, chosen, options.calibration(ctx), ctx, put)
            for name in others:
                ctx.skip(name, "Linear outside the calibrated blocks was never reached by calibration data")
        else:
            for name, _ in ctx.progress(layers, "quantization levels"):
                put(name, None)
    finally:
        with torch.no_grad():  # the database leaves the model as it found it
            for n in changed:
                chosen[n].weight.copy_(store.get(n, ["dense"])[0])
    units = [n for n, _ in layers if n not in others]
    shapes = [(chosen[n].out_features, chosen[n].in_features, chosen[n].bias is not None) for n in units]
    costs = [[layer_cost(r, c, b, cfg.group_size, cfg.symmetric, hb, cost) for b in bits] for r, c, hb in shapes]
    target = None
    if target_avg_bits is not None:
        n_weights = sum(r * c for r, c, _ in shapes)
        target = math.floor(target_avg_bits * n_weights / (1 if cost == "nominal" else 8))
    start = _start(costs, bits, cfg.bits, target, f"target_avg_bits = {target_avg_bits!r}")
    return QuantLevelSpace(step, units, shapes, bits, start, store, cost, others)
