"""``grow`` handlers: Net2Net wider (resize producer/consumer pairs) and deeper (identity blocks)."""
from __future__ import annotations

import torch
from torch import nn

from slimkit.core.context import RunContext
from slimkit.core.errors import ConfigError, UnsupportedModelError
from slimkit.core.provenance import record_edit
from slimkit.core.registry import register
from slimkit.core.select import matching_names
from slimkit.io.edits import replace_module
from slimkit.surgery.blocks import find_blocks, insert_blocks
from slimkit.surgery.grow.config import GrowConfig
from slimkit.surgery.grow.core import identity_init, residual_zero_targets, widen_pair, widening_map
from slimkit.surgery.layers import resize_linear
from slimkit.surgery.merge_layers.core import adjacent_pairs

__all__ = ["grow_wider", "grow_deeper", "widen_groups"]

#: elementwise modules that may sit between a producer and a consumer being widened
ELEMENTWISE = (nn.ReLU, nn.ReLU6, nn.GELU, nn.SiLU, nn.Tanh, nn.Sigmoid, nn.LeakyReLU, nn.ELU, nn.Mish,
               nn.Hardswish, nn.Dropout, nn.Identity)

Group = tuple[list[str], str]  # (producer names, consumer name)


def widen_groups(model: nn.Module, cfg: GrowConfig) -> list[Group]:
    """The producer/consumer groups to widen: explicit ``pairs``, or found by architecture."""
    if cfg.pairs is not None:
        for names in cfg.pairs:
            for n in names:
                if not isinstance(_get(model, n, "pairs"), nn.Linear):
                    raise UnsupportedModelError(f"pairs: {n!r} is not an nn.Linear")
        return [([a], b) for a, b in cfg.pairs]
    groups: list[Group] = []
    for name, m in model.named_modules():
        p = f"{name}." if name else ""
        if all(isinstance(getattr(m, k, None), nn.Linear) for k in ("gate_proj", "up_proj", "down_proj")):
            groups.append(([p + "gate_proj", p + "up_proj"], p + "down_proj"))
        inter, out = getattr(getattr(m, "intermediate", None), "dense", None), getattr(getattr(m, "output", None), "dense", None)
        if isinstance(inter, nn.Linear) and isinstance(out, nn.Linear) and out.in_features == inter.out_features:
            groups.append(([p + "intermediate.dense"], p + "output.dense"))
    if not groups:
        groups = [([a], b) for a, b in adjacent_pairs(model, (nn.Linear,), (nn.Linear,), ELEMENTWISE)]
    if not groups:
        raise UnsupportedModelError(f"{type(model).__name__}: found no Linear -> elementwise -> Linear pair to widen; "
                                    "name them with pairs: [[producer, consumer]]")
    return groups


def _get(model: nn.Module, name: str, field: str) -> nn.Module:
    try:
        return model.get_submodule(name)
    except AttributeError:
        raise ConfigError(f"{field}: the model has no module {name!r}") from None


def _filter(model: nn.Module, groups: list[Group], cfg: GrowConfig) -> list[Group]:
    wanted = matching_names(model, cfg.targets, "grow.targets") if cfg.targets is not None else None
    dropped = matching_names(model, cfg.ignore, "grow.ignore") if cfg.ignore else set()
    return [g for g in groups if g[0][0] not in dropped and (wanted is None or g[0][0] in wanted)]


def _put_linear(model: nn.Module, name: str, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
    """Swap in a Linear of ``weight``'s shape holding ``weight``/``bias``, and record the resize."""
    old = model.get_submodule(name)
    new = resize_linear(old, weight.shape[1], weight.shape[0])
    with torch.no_grad():
        new.weight.copy_(weight)
        if bias is not None:
            new.bias.copy_(bias)
        elif old.bias is not None:
            new.bias.copy_(old.bias)
    replace_module(model, name, new)
    record_edit(model, {"op": "resize_linear", "path": name, "in_features": weight.shape[1], "out_features": weight.shape[0]})


@register("grow", "wider", GrowConfig, default=True)
def grow_wider(model: nn.Module, cfg: GrowConfig, ctx: RunContext) -> nn.Module:
    """Net2WiderNet: multiply each hidden width by ``factor`` keeping the function."""
    groups = _filter(model, widen_groups(model, cfg), cfg)
    gen = torch.Generator().manual_seed(cfg.seed)
    widths = {}
    for producer_names, consumer_name in groups:
        producers = [model.get_submodule(n) for n in producer_names]
        consumer = model.get_submodule(consumer_name)
        width = producers[0].out_features
        if any(p.out_features != width for p in producers) or consumer.in_features != width:
            raise UnsupportedModelError(f"{consumer_name}: input width {consumer.in_features} does not match "
                                        f"{producer_names} output width {width}")
        g = widening_map(width, int(round(width * cfg.factor)), gen)
        wide, w_c = widen_pair(producers, consumer, g, cfg.noise, gen)
        for name, (w, b) in zip(producer_names, wide):
            _put_linear(model, name, w, b)
        _put_linear(model, consumer_name, w_c, None)
        widths[producer_names[0]] = [width, len(g)]
    ctx.note("widened", widths)
    return model


def _insert_after(n_blocks: int, candidates: list[int], cfg: GrowConfig) -> list[int]:
    if cfg.after is not None:
        bad = [a for a in cfg.after if a >= n_blocks]
        if bad:
            raise ConfigError(f"grow.after = {bad}: the stack has {n_blocks} blocks; valid range is [0, {n_blocks - 1}]")
        return list(cfg.after)
    n = int(cfg.n)  # type: ignore[arg-type]
    if not candidates:
        raise UnsupportedModelError("grow: no residual block of the stack can be copied as an identity block")
    # spread over the candidates: the block at each (k+1)/(n+1) quantile, repeated when n is large
    return sorted(candidates[min(len(candidates) - 1, (k + 1) * len(candidates) // (n + 1))] for k in range(n))


@register("grow", "deeper", GrowConfig)
def grow_deeper(model: nn.Module, cfg: GrowConfig, ctx: RunContext) -> nn.Module:
    """Net2DeeperNet: insert identity-initialised copies of existing residual blocks."""
    blocks = find_blocks(model, cfg.container)
    after = _insert_after(len(blocks), blocks.droppable, cfg)
    zero = {a: cfg.zero or residual_zero_targets(blocks.container[a]) for a in after}  # raises before editing
    record, positions = insert_blocks(model, blocks.path, after)
    container = model.get_submodule(blocks.path)
    for a, pos in zip(sorted(after), positions):
        identity_init(container[pos], zero[a])
    record_edit(model, record)
    ctx.note("inserted_at", positions)
    ctx.note("blocks_after", len(container))
    return model
