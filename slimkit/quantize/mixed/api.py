"""``quantize: {method: mixed}`` handler: measure sensitivity block by block, allocate bits, install."""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from slimkit.core.context import RunContext
from slimkit.core.errors import ConfigError
from slimkit.core.registry import register
from slimkit.io.edits import replace_module
from slimkit.measure.quality import Perplexity
from slimkit.measure.size import weight_tensors
from slimkit.quantize.gptq.core import HessianAccumulator
from slimkit.quantize.mixed.config import MixedConfig
from slimkit.quantize.mixed.core import FLOAT, layer_bytes, layer_error, upgrade_path
from slimkit.quantize.rtn.core import rtn_linear
from slimkit.quantize.weight_only.apply import finish_notes, install, quantize_heads, select_linears
from slimkit.quantize.weight_only.sequential import StatsHook, block_layers, run_blocks

__all__ = ["quantize_mixed"]


def _sensitivity(model: nn.Module, layers: dict[str, nn.Linear], levels: list[int], cfg: MixedConfig,
                 ctx: RunContext, calib: list) -> dict[str, list[float]]:
    """errors[layer][level] from each layer's calibration Hessian, one block at a time."""
    errors: dict[str, list[float]] = {}
    diag_means: list[float] = []  # typical per-feature input energy, for layers seen without calibration

    def visit(block_name: str, block: nn.Module, replay: Callable[[], None]) -> None:
        local = block_layers(block_name, block, layers)
        hess = {n: HessianAccumulator(m.in_features) for n, m in local.items()}
        with StatsHook(local, lambda n, x: hess[n].add(x)):
            replay()
        for name, m in local.items():
            h = hess.pop(name).hessian()
            diag_means.append(float(h.diagonal().mean()))
            errors[name] = [layer_error(m.weight, h, b, cfg.group_size, cfg.symmetric) for b in levels]

    run_blocks(model, calib, visit, ctx.progress)
    # Linears outside the repeated blocks (e.g. BERT's pooler) see no block-wise calibration:
    # score them by weight error under an isotropic Hessian scaled like the calibrated layers'
    # (so their scores stay comparable), and say so in the report.
    outside = [n for n in layers if n not in errors]
    scale = sum(diag_means) / len(diag_means) if diag_means else 1.0
    for name in outside:
        m = layers[name]
        eye = torch.eye(m.in_features, dtype=torch.float32) * scale
        errors[name] = [layer_error(m.weight, eye, b, cfg.group_size, cfg.symmetric) for b in levels]
    if outside:
        ctx.note("scored_without_calibration", outside)
    return errors


def _assignment(path: list[tuple[str, int]], upto: int, names: list[str]) -> dict[str, int]:
    level = {n: 0 for n in names}
    for name, idx in path[:upto]:
        level[name] = idx
    return level


def _swap(model: nn.Module, layers: dict[str, nn.Linear], level: dict[str, int], levels: list[int],
          cfg: MixedConfig) -> None:
    """Put RTN layers (or the original float Linear) in place, without recording edits."""
    for name, lin in layers.items():
        b = levels[level[name]]
        replace_module(model, name, lin if b == FLOAT else rtn_linear(lin, b, cfg.group_size, cfg.symmetric, cfg.runtime))


def _stored_bytes(model: nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in weight_tensors(model))


def _budget_cut(path, cfg: MixedConfig, model: nn.Module, layers, costs, total: int) -> int:
    """Longest prefix of the upgrade path under the budget. ``total`` is the model's bytes before the
    step (what ``target_ratio`` is a fraction of); the head and embeddings are already stored at
    ``head_bits`` here, so their real bytes count as fixed."""
    fixed = _stored_bytes(model) - sum(4 * m.weight.numel() for m in layers.values())
    budget = cfg.target_bytes if cfg.target_bytes is not None else int(cfg.target_ratio * total)
    used = fixed + sum(c[0] for c in costs.values())
    if used > budget:
        raise ConfigError(f"target budget {budget} bytes is below the smallest mixed model ({used} bytes at "
                          f"{min(cfg.bits_choices)} bits everywhere)")
    upto = 0
    for name, idx in path:
        extra = costs[name][idx] - costs[name][idx - 1]
        if used + extra > budget:
            break  # greedy prefix: stop at the first upgrade that does not fit
        used += extra
        upto += 1
    return upto


def _quality_cut(path, cfg: MixedConfig, model: nn.Module, layers, levels, calib, ctx: RunContext) -> int:
    batches = [b for b in calib if isinstance(b, dict) and "input_ids" in b][:cfg.eval_batches]
    if not batches:
        raise ConfigError("max_quality_drop needs calibration batches with input_ids (a causal LM)")
    ppl = Perplexity(batches)  # only to compare assignments: calibration batches, not held-out data
    base = ppl(model)
    lo, hi = 0, len(path)  # find the smallest prefix whose ppl ratio meets the bound
    while lo < hi:
        mid = (lo + hi) // 2
        _swap(model, layers, _assignment(path, mid, list(layers)), levels, cfg)
        ok = ppl(model) / base - 1 <= cfg.max_quality_drop
        hi, lo = (mid, lo) if ok else (hi, mid + 1)
    _swap(model, layers, {n: len(levels) - 1 for n in layers}, levels, cfg)  # restore float originals
    ctx.note("calib_ppl_fp32", round(base, 3))
    return lo


@register("quantize", "mixed", MixedConfig, needs=("calib",))
def quantize_mixed(model: nn.Module, cfg: MixedConfig, ctx: RunContext) -> nn.Module:
    """Choose each Linear's bits from measured sensitivity under the budget, then quantize (RTN)."""
    calib = ctx.require("calib", "quantize:mixed")
    layers = dict(select_linears(model, cfg, ctx, "quantize"))
    total = _stored_bytes(model)
    quantize_heads(model, cfg, ctx)  # first, so the budget plans with the head's real (int8) bytes
    levels = sorted(set(cfg.bits_choices)) + ([FLOAT] if cfg.allow_float else [])
    costs = {n: [layer_bytes(m.out_features, m.in_features, b, cfg.group_size, cfg.symmetric) for b in levels]
             for n, m in layers.items()}
    errors = _sensitivity(model, layers, levels, cfg, ctx, calib)
    path = upgrade_path(levels, costs, errors)
    if cfg.max_quality_drop is not None:
        upto = _quality_cut(path, cfg, model, layers, levels, calib, ctx)
    else:
        upto = _budget_cut(path, cfg, model, layers, costs, total)
    level = _assignment(path, upto, list(layers))
    histogram: dict[str, int] = {}
    for name, lin in layers.items():
        b = levels[level[name]]
        histogram[str(b) if b != FLOAT else "fp32"] = histogram.get(str(b) if b != FLOAT else "fp32", 0) + 1
        if b != FLOAT:
            install(model, name, rtn_linear(lin, b, cfg.group_size, cfg.symmetric, cfg.runtime))
    ctx.note("bits_histogram", histogram)
    ctx.note("upgrades_taken", f"{upto}/{len(path)}")
    finish_notes(model, ctx, sum(v for k, v in histogram.items() if k != "fp32"))
    return model
