"""What each streamable recipe step does to one block, built from the methods' own code.

A streamed step is split into the parts the whole-model handler runs over the whole model:

* ``select``: the layers the handler would choose, computed once on the skeleton with the
  handler's own selection function (so targets / ignore / head rules match exactly);
* ``stats`` + ``apply``: per layer, the handler's statistics accumulator fed by the same hooks,
  then the handler's own math (``rtn_linear``, ``gptq_quantize``, ``awq_search``, ``wanda_mask``,
  ``sparsegpt_prune``, ``layer_mask`` / ``nm_mask``, ``Int8DynamicLinear.from_linear``);
* ``outer``: what the handler does outside the blocks (weight-only: ``quantize_heads``, int8 head
  and embeddings by default; dynamic int8 / magnitude: selected layers outside the blocks).

Steps that need the whole model at once (distill, finetune, structured pruning, layer surgery,
search, global magnitude ranking, ...) are refused with a :class:`ConfigError` before any work.
Per-layer ``sparsity`` maps are resolved on the skeleton with the whole-model handlers' own
resolver (:func:`slimkit.prune.sparsity.layer_sparsities`), so each layer gets the same value;
``allocation: owl`` is refused: OWL's outlier ratios come from one *dense* pass over every block
before any block is pruned, which a single streaming pass cannot provide (its resolved per-layer
map, from the report's ``resolved_sparsity``, streams). Per-layer ``bits`` maps are refused.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from slimkit.core.context import RunContext
from slimkit.core.errors import ConfigError, UnsupportedModelError
from slimkit.core.recipe import Recipe
from slimkit.core.swap import install_layer

__all__ = ["StreamStep", "STREAMABLE", "plan_steps"]

#: ``(step, method)`` pairs compress_stream runs
STREAMABLE = (("quantize", "rtn"), ("quantize", "gptq"), ("quantize", "awq"), ("quantize", "dynamic_int8"),
              ("prune", "wanda"), ("prune", "sparsegpt"), ("prune", "magnitude"))


@dataclasses.dataclass
class StreamStep:
    """One recipe step as streaming runs it (see the module docstring)."""

    label: str
    cfg: Any
    ctx: RunContext
    calib: bool
    select: Callable[[nn.Module], list[str]]
    stats: Callable[[str, nn.Module], Any] | None = None
    #: "input": stats.add(x2d float32) (weight-only); "prune": stats.add(module, input, output)
    hook: str = "input"
    apply: Callable[[nn.Module, str, nn.Module, Any], None] = lambda *_: None
    outer: Callable[[nn.Module, list[str]], None] = lambda *_: None
    chosen: list[str] = dataclasses.field(default_factory=list)


def plan_steps(recipe: Recipe, n_calib: int, show_progress: bool) -> list[StreamStep]:
    """The streamable form of every step, or a :class:`ConfigError` naming the first that is not.

    Prune steps may come first, then at most one quantize step, last: a quantize step changes the
    layers' type, which a later step's selection would see only after all blocks were processed.
    """
    steps, quantized = [], None
    for i, step in enumerate(recipe.steps):
        label = f"steps[{i}] {step.name}:{step.method}"
        if (step.name, step.method) not in STREAMABLE:
            allowed = ", ".join(f"{s}:{m}" for s, m in STREAMABLE)
            raise ConfigError(f"{label} cannot be streamed block by block (it needs the whole model); "
                              f"streamable steps: {allowed}")
        if quantized is not None:
            raise ConfigError(f"{label} comes after {quantized}; streaming runs prune steps first and at most "
                              "one quantize step, last")
        if step.name == "quantize":
            quantized = label
        if step.name == "quantize" and step.method != "dynamic_int8" and not isinstance(step.config.bits, int):
            raise ConfigError(f"{label}: bits = {step.config.bits!r}; streaming takes one bit width for every layer")
        if step.name == "prune" and getattr(step.config, "allocation", "uniform") != "uniform":
            raise ConfigError(f"{label}: allocation = {step.config.allocation!r}; OWL needs a dense calibration pass "
                              "over the whole model before any block is pruned, which streaming does not do; stream "
                              "allocation: uniform, or the resolved per-layer map (report: resolved_sparsity) "
                              "as sparsity")
        ctx = RunContext(show_progress=show_progress)
        steps.append(_BUILDERS[step.method](label, step.config, ctx, n_calib))
    return steps


def _names(pairs: Any) -> list[str]:
    return [n for n, _ in (pairs.items() if isinstance(pairs, dict) else pairs)]


# ----------------------------------------------------------------------------- weight-only quantization
def _weight_only_select(cfg: Any, ctx: RunContext) -> Callable[[nn.Module], list[str]]:
    from slimkit.quantize.weight_only.apply import select_linears

    return lambda model: _names(select_linears(model, cfg, ctx, "quantize"))


def _heads(cfg: Any, ctx: RunContext, calibrated: bool) -> Callable[[nn.Module, list[str]], None]:
    """Outside the blocks: calibrated methods report the Linears no calibration reached (as their
    handlers do); RTN rounds them; then the head / embeddings at ``head_bits``."""
    from slimkit.quantize.rtn.core import rtn_linear
    from slimkit.quantize.weight_only.apply import install, quantize_heads

    def outer(model: nn.Module, names: list[str]) -> None:
        for name in names:
            if calibrated:
                ctx.skip(name, "Linear outside the calibrated blocks was never reached by calibration data")
            else:
                install(model, name, rtn_linear(model.get_submodule(name), cfg.bits, cfg.group_size, cfg.symmetric,
                                                cfg.runtime, cfg.clip_search))
        quantize_heads(model, cfg, ctx)
    return outer


def _rtn(label: str, cfg: Any, ctx: RunContext, _n: int) -> StreamStep:
    from slimkit.quantize.rtn.core import rtn_linear
    from slimkit.quantize.weight_only.apply import install

    def apply(model: nn.Module, name: str, linear: nn.Module, _stats: Any) -> None:
        install(model, name, rtn_linear(linear, cfg.bits, cfg.group_size, cfg.symmetric, cfg.runtime,
                                        cfg.clip_search))
    return StreamStep(label, cfg, ctx, False, _weight_only_select(cfg, ctx), apply=apply,
                      outer=_heads(cfg, ctx, False))


def _gptq(label: str, cfg: Any, ctx: RunContext, _n: int) -> StreamStep:
    from slimkit.quantize.gptq.core import HessianAccumulator, gptq_quantize
    from slimkit.quantize.weight_only.apply import install
    from slimkit.quantize.weight_only.layer import WeightOnlyLinear

    def apply(model: nn.Module, name: str, linear: nn.Module, hess: Any) -> None:
        codes = gptq_quantize(linear.weight, hess.take(), cfg.bits, cfg.group_size, cfg.symmetric,
                              cfg.damp, cfg.act_order, cfg.block_size, cfg.clip_search)
        with torch.no_grad():
            install(model, name, WeightOnlyLinear.from_weight(linear.weight, linear.bias, cfg.bits, cfg.group_size,
                                                              cfg.symmetric, cfg.runtime, codes=codes))
    return StreamStep(label, cfg, ctx, True, _weight_only_select(cfg, ctx),
                      stats=lambda _n, m: HessianAccumulator(m.in_features), apply=apply,
                      outer=_heads(cfg, ctx, True))


def _awq(label: str, cfg: Any, ctx: RunContext, n_calib: int) -> StreamStep:
    from slimkit.quantize.awq.core import ActivationStats, awq_search
    from slimkit.quantize.weight_only.apply import install
    from slimkit.quantize.weight_only.layer import WeightOnlyLinear

    per_batch = max(1, cfg.n_tokens // max(n_calib, 1))

    def apply(model: nn.Module, name: str, linear: nn.Module, st: Any) -> None:
        st.keep = cfg.n_tokens
        inv, codes, _alpha = awq_search(linear.weight, st.sample(), st.mean_abs(), cfg.bits, cfg.group_size,
                                        cfg.symmetric, cfg.grid, cfg.clip_search)
        with torch.no_grad():
            install(model, name, WeightOnlyLinear.from_weight(linear.weight, linear.bias, cfg.bits, cfg.group_size,
                                                              cfg.symmetric, cfg.runtime, input_scale=inv, codes=codes))
    return StreamStep(label, cfg, ctx, True, _weight_only_select(cfg, ctx),
                      stats=lambda _n, m: ActivationStats(m.in_features, per_batch), apply=apply,
                      outer=_heads(cfg, ctx, True))


def _dynamic_int8(label: str, cfg: Any, ctx: RunContext, _n: int) -> StreamStep:
    from slimkit.core.swap import swappable_layers
    from slimkit.quantize.dynamic_int8.config import TIED_REASON
    from slimkit.quantize.dynamic_int8.core import Int8DynamicLinear

    def select(model: nn.Module) -> list[str]:
        return _names(swappable_layers(model, (nn.Linear,), ctx, targets=cfg.targets, ignore=cfg.ignore,
                                       field="quantize", tied_reason=None if cfg.quantize_tied else TIED_REASON))

    def apply(model: nn.Module, name: str, linear: nn.Module, _stats: Any) -> None:
        install_layer(model, name, Int8DynamicLinear.from_linear(linear, cfg.per_channel, cfg.activations))

    def outer(model: nn.Module, names: list[str]) -> None:
        for name in names:
            apply(model, name, model.get_submodule(name), None)
    return StreamStep(label, cfg, ctx, False, select, apply=apply, outer=outer)


# ----------------------------------------------------------------------------- pruning
def _refuse_outside(label: str) -> Callable[[nn.Module, list[str]], None]:
    def outer(_model: nn.Module, names: list[str]) -> None:
        if names:
            raise ConfigError(f"{label}: layers {names} lie outside the decoder blocks; calibrating them needs a "
                              "whole-model pass, which streaming does not do (leave them out of targets)")
    return outer


def _calibrated_prune(cfg: Any, ctx: RunContext, sparsity: dict[str, float]) -> Callable[[nn.Module], list[str]]:
    """The handler's layer selection; fills ``sparsity`` with each selected layer's value (a number
    or a per-layer map resolved exactly as the whole-model handler does; empty for N:M)."""
    from slimkit.prune.calibrated import selected_linears
    from slimkit.prune.pattern import parse_pattern
    from slimkit.prune.sparsity import layer_sparsities

    def select(model: nn.Module) -> list[str]:
        layers = selected_linears(model, cfg, ctx)
        sparsity.clear()
        if parse_pattern(cfg.pattern) is None:
            sparsity.update(layer_sparsities(cfg.sparsity, layers, ctx))
        return _names(layers)
    return select


def _wanda(label: str, cfg: Any, ctx: RunContext, _n: int) -> StreamStep:
    from slimkit.prune.importance import InputNormStats, WandaImportance
    from slimkit.prune.magnitude.core import apply_mask
    from slimkit.prune.pattern import parse_pattern
    from slimkit.prune.wanda.core import wanda_mask

    nm = parse_pattern(cfg.pattern)
    sparsity: dict[str, float] = {}

    def apply(_model: nn.Module, name: str, module: nn.Module, stats: Any) -> None:
        scores = WandaImportance({name: stats})(name, module)
        apply_mask(module.weight, wanda_mask(scores, sparsity[name] if nm is None else 0.0, nm))
    return StreamStep(label, cfg, ctx, True, _calibrated_prune(cfg, ctx, sparsity), hook="prune",
                      stats=lambda _n, m: InputNormStats(m.in_features), apply=apply, outer=_refuse_outside(label))


def _sparsegpt(label: str, cfg: Any, ctx: RunContext, _n: int) -> StreamStep:
    from slimkit.prune.pattern import parse_pattern
    from slimkit.prune.sparsegpt.core import HessianStats, sparsegpt_prune

    nm = parse_pattern(cfg.pattern)
    sparsity: dict[str, float] = {}

    def apply(_model: nn.Module, name: str, module: nn.Module, stats: Any) -> None:
        try:
            new = sparsegpt_prune(module.weight, stats.H, sparsity[name] if nm is None else 0.0, nm, cfg.blocksize,
                                  cfg.percdamp)
        except torch.linalg.LinAlgError as exc:
            raise UnsupportedModelError(f"layer {name!r}: SparseGPT Hessian factorisation failed ({exc})") from None
        with torch.no_grad():
            module.weight.copy_(new)
    return StreamStep(label, cfg, ctx, True, _calibrated_prune(cfg, ctx, sparsity), hook="prune",
                      stats=lambda _n, m: HessianStats(m.in_features), apply=apply, outer=_refuse_outside(label))


def _magnitude(label: str, cfg: Any, ctx: RunContext, _n: int) -> StreamStep:
    from slimkit.core.heads import drop_protected
    from slimkit.core.select import select_modules
    from slimkit.prune.importance import MagnitudeImportance
    from slimkit.prune.magnitude.core import apply_mask, layer_mask
    from slimkit.prune.pattern import check_nm_width, nm_mask, parse_pattern
    from slimkit.prune.sparsity import layer_sparsities

    if cfg.scope != "layer":
        raise ConfigError(f"{label}: scope = {cfg.scope!r} ranks all layers at once, which needs the whole model; "
                          "streaming supports scope: layer (or an N:M pattern)")
    nm = parse_pattern(cfg.pattern)
    sparsity: dict[str, float] = {}

    def select(model: nn.Module) -> list[str]:
        types = tuple(getattr(nn, t) for t in cfg.layer_types)
        chosen = drop_protected(model, select_modules(model, types, targets=cfg.targets, ignore=cfg.ignore,
                                                      field="prune"), cfg.targets, ctx)
        for name, module in chosen if nm else ():
            check_nm_width(name, module.weight, nm[1])
        sparsity.clear()
        if nm is None:
            sparsity.update(layer_sparsities(cfg.sparsity, chosen, ctx))
        return _names(chosen)

    def apply(_model: nn.Module, name: str, module: nn.Module, _stats: Any) -> None:
        s = MagnitudeImportance()(name, module)
        apply_mask(module.weight, nm_mask(s, *nm) if nm is not None else layer_mask(s, sparsity[name]))

    def outer(model: nn.Module, names: list[str]) -> None:
        for name in names:
            apply(model, name, model.get_submodule(name), None)
    return StreamStep(label, cfg, ctx, False, select, apply=apply, outer=outer)


_BUILDERS: dict[str, Callable[[str, Any, RunContext, int], StreamStep]] = {
    "rtn": _rtn, "gptq": _gptq, "awq": _awq, "dynamic_int8": _dynamic_int8,
    "wanda": _wanda, "sparsegpt": _sparsegpt, "magnitude": _magnitude,
}
