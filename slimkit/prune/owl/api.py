"""``allocation: owl`` for ``prune: {method: wanda | sparsegpt}``: one dense calibration pass to
measure each decoder block's outlier ratio, then per-layer sparsities for the pruner.

```yaml
- prune: {method: wanda, sparsity: 0.7, allocation: owl}                  # λ = 0.08, M = 5
- prune: {method: sparsegpt, sparsity: 0.6, allocation: owl, owl_lambda: 0.1, owl_threshold: 7}
```
The outlier ratio of block ``l`` is the fraction of its selected Linears' Wanda scores
``|W_ij|·‖X_j‖`` above ``owl_threshold`` × the block's mean score, with ``X`` the inputs the
*dense* model feeds the block (as in OWL's reference code). Every selected Linear of a block gets
the block's sparsity (:func:`slimkit.prune.owl.core.owl_block_sparsities`); selected layers outside
the block stack keep the target and are reported. The found allocation is an ordinary per-layer
map (:meth:`OwlAllocation.resolved_map`, the ``resolved_sparsity`` note), and :func:`owl_step`
returns the plain step that replays it without OWL:

```python
step = owl_step(model, {"prune": {"method": "wanda", "sparsity": 0.7}}, calib)
# {"prune": {"method": "wanda", "sparsity": {"model.layers.0": 0.731..., ...}, "allocation": "uniform", ...}}
```
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from torch import nn

from slimkit.core.context import RunContext
from slimkit.core.errors import ConfigError, UnsupportedModelError
from slimkit.core.registry import lookup
from slimkit.core.sequential import repeated_blocks, run_blocks
from slimkit.prune.calibration import collect_stats
from slimkit.prune.importance import InputNormStats, WandaImportance
from slimkit.prune.owl.core import outlier_ratio, owl_block_sparsities
from slimkit.prune.wanda.config import CalibratedPruneConfig

__all__ = ["OwlAllocation", "owl_allocation", "note_owl", "owl_step"]

Progress = Callable[[Iterable[Any], str], Iterable[Any]]


@dataclasses.dataclass
class OwlAllocation:
    """What OWL found: outlier ratio and sparsity per block, and the sparsity of every selected layer."""

    target: float
    block_ratio: dict[str, float]
    block_sparsity: dict[str, float]
    block_layers: dict[str, list[str]]
    outside: list[str]
    per_layer: dict[str, float]

    def resolved_map(self) -> dict[str, float]:
        """The allocation as a ``sparsity:`` map that replays it: one rule per block (the block's
        module name covers its selected layers), then each selected layer outside the blocks."""
        out = {block: self.block_sparsity[block] for block in self.block_layers}
        out.update({name: self.per_layer[name] for name in self.outside})
        return out


def _block_ratios(model: nn.Module, layers: list[tuple[str, nn.Module]], calib: Sequence[Any], threshold: float,
                  progress: Progress | None) -> tuple[dict[str, float], dict[str, list[str]]]:
    """Outlier ratio of every block holding selected layers, from the dense model's block inputs."""
    pending = dict(layers)
    ratios: dict[str, float] = {}
    members: dict[str, list[str]] = {}

    def visit(block_name: str, _block: nn.Module, replay: Callable[[], None]) -> None:
        mine = {n: m for n, m in pending.items() if n.startswith(f"{block_name}.")}
        if not mine:
            return
        stats = collect_stats(mine, lambda _n, m: InputNormStats(m.in_features), replay)
        scores = [WandaImportance(stats)(n, m) for n, m in mine.items()]
        ratios[block_name], members[block_name] = outlier_ratio(scores, threshold), list(mine)
        for n in mine:
            del pending[n]

    run_blocks(model, list(calib), visit, progress)
    return ratios, members


def owl_allocation(model: nn.Module, cfg: CalibratedPruneConfig, layers: list[tuple[str, nn.Module]],
                   calib: Sequence[Any], progress: Progress | None = None) -> OwlAllocation:
    """OWL's per-layer sparsities for ``layers`` (the step's selection) at ``cfg.sparsity`` on average.

    Leaves ``model`` unchanged. Raises :class:`UnsupportedModelError` for a model without a block
    stack and :class:`ConfigError` when ``sparsity`` ± the band leaves [0, 1).
    """
    if repeated_blocks(model) is None:
        raise UnsupportedModelError(f"allocation = 'owl' allocates sparsity per decoder block; "
                                    f"{type(model).__name__} has no repeated block stack (use allocation: uniform)")
    ratios, members = _block_ratios(model, layers, calib, cfg.owl_threshold, progress)
    sizes = [sum(model.get_submodule(n).weight.numel() for n in members[b]) for b in ratios]
    target = float(cfg.sparsity)
    block_sparsity = dict(zip(ratios, owl_block_sparsities(list(ratios.values()), sizes, target, cfg.owl_lambda)))
    bad = {b: round(s, 4) for b, s in block_sparsity.items() if not 0.0 <= s < 1.0}
    if bad:
        raise ConfigError(f"allocation = 'owl' with sparsity = {target} and owl_lambda = {cfg.owl_lambda} gives block "
                          f"sparsities {bad} outside [0, 1); lower owl_lambda or move sparsity away from 0 / 1")
    per_layer = {n: block_sparsity[b] for b, names in members.items() for n in names}
    outside = [n for n, _ in layers if n not in per_layer]
    per_layer.update({n: target for n in outside})
    return OwlAllocation(target, ratios, block_sparsity, members, outside, {n: per_layer[n] for n, _ in layers})


def note_owl(allocation: OwlAllocation, ctx: RunContext) -> None:
    """Report OWL's outlier ratios, block sparsities and the replayable ``resolved_sparsity`` map."""
    ctx.note("allocation", "owl")
    ctx.note("owl_outlier_ratio", {b: round(r, 6) for b, r in allocation.block_ratio.items()})
    ctx.note("owl_block_sparsity", {b: round(s, 4) for b, s in allocation.block_sparsity.items()})
    ctx.note("resolved_sparsity", allocation.resolved_map())
    for name in allocation.outside:
        ctx.skip(name, f"outside the decoder blocks: OWL gives it the target sparsity {allocation.target}")
    if len(set(allocation.block_sparsity.values())) <= 1:
        ctx.note("owl_uniform_because", "every block has the same outlier ratio (or one block, or owl_lambda = 0)")


def _config(step: Mapping[str, Any] | CalibratedPruneConfig) -> CalibratedPruneConfig:
    if isinstance(step, CalibratedPruneConfig):
        return step
    options = step.get("prune", step) if isinstance(step, Mapping) else None
    if not isinstance(options, Mapping):
        raise ConfigError(f"owl_step: expected a prune step mapping like {{'prune': {{...}}}}, got {step!r}")
    spec = lookup("prune", options.get("method"), where="owl_step")
    if not issubclass(spec.config_cls, CalibratedPruneConfig):
        raise ConfigError(f"owl_step: prune method {spec.method!r} has no OWL allocation; use wanda or sparsegpt")
    return spec.config_cls.from_dict({**options, "allocation": "owl"}, where="owl_step.prune")


def owl_step(model: nn.Module, step: Mapping[str, Any] | CalibratedPruneConfig, calib: Sequence[Any]) -> dict[str, Any]:
    """The plain ``{"prune": {...}}`` step holding OWL's allocation for ``step``'s target as a
    per-layer ``sparsity`` map (``allocation: uniform``), so that running it reproduces
    ``allocation: owl`` exactly without measuring outliers again. ``step`` is a wanda / sparsegpt
    prune step (``{"prune": {...}}``, its options, or its config) with a scalar ``sparsity``;
    ``model`` is not modified.
    """
    from slimkit.prune.calibrated import selected_linears

    cfg = _config(step)
    if not isinstance(cfg.sparsity, (int, float)) or cfg.pattern is not None:
        raise ConfigError(f"owl_step: needs a scalar sparsity without pattern, got sparsity = {cfg.sparsity!r}, "
                          f"pattern = {cfg.pattern!r}")
    ctx = RunContext(calib=list(calib), show_progress=False)
    layers = selected_linears(model, cfg, ctx)
    allocation = owl_allocation(model, cfg, layers, ctx.require("calib", "owl_step"))
    options = {**cfg.to_dict(), "allocation": "uniform", "sparsity": allocation.resolved_map()}
    return {"prune": options}
