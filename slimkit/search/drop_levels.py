"""Block-drop levels for ``search`` over ``drop_layers: {n: k}`` (or ``fraction``).

Units are the droppable blocks of the model's block stack (:func:`slimkit.surgery.blocks.find_blocks`:
the blocks whose output has their input's shape), written as their index. Each has two levels:
0 kept, 1 dropped. Cost = blocks kept (1 or 0), so the budget is exactly ``len(units) - k`` and a
level switch drops one block while bringing back another. The starting assignment is the wrapped
step's own choice (block influence, measured quality, the last blocks, or an explicit list), so
the search starts from the choice it has to beat.

:meth:`DropLevelSpace.apply` removes a block by overriding its ``forward`` on the instance with a
bypass that returns the block's input in the structure of its output (a tensor, or a tuple whose
first element is the hidden state): no weights are copied and the block does not run;
:meth:`DropLevelSpace.restore` deletes the override. The found allocation is the ordinary step
``drop_layers: {method: explicit, blocks: [...]}``.

```yaml
- search:
    method: evolution
    step: {drop_layers: {method: influence, n: 8}}
```
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn

from slimkit.core.context import RunContext
from slimkit.core.errors import ConfigError
from slimkit.search.space import SpaceOptions, register_space
from slimkit.surgery.blocks import find_blocks
from slimkit.surgery.drop_layers.api import explicit_blocks, score_blocks
from slimkit.surgery.drop_layers.core import block_io_tensor, choose_blocks

__all__ = ["DropLevelSpace", "drop_space"]


class _Bypass:
    """A block's ``forward`` replacement returning the block's hidden-state input.

    The output structure (plain tensor, or a tuple of ``n`` items) is learnt from the block's one
    real call the first time the bypass runs, then reused (the extra items become ``None``)."""

    def __init__(self, block: nn.Module, shapes: dict[int, int | None]) -> None:
        self.block, self.shapes = block, shapes

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        key = id(self.block)
        if key not in self.shapes:
            out = type(self.block).forward(self.block, *args, **kwargs)
            self.shapes[key] = len(out) if isinstance(out, (tuple, list)) else None
        x = block_io_tensor(args if args else kwargs)
        width = self.shapes[key]
        return x if width is None else (x,) + (None,) * (width - 1)


class DropLevelSpace:
    """Level space over which blocks to drop (see the module docstring)."""

    value_name = "kept"

    def __init__(self, step: Any, path: str, droppable: list[int], dropped: list[int]) -> None:
        self.step, self.path = step, path
        self.indices = list(droppable)
        self.units = [str(i) for i in droppable]
        self.n_levels = [2] * len(droppable)
        self._start = [1 if i in set(dropped) else 0 for i in droppable]
        self._shapes: dict[int, int | None] = {}

    def cost(self, unit: int, level: int) -> int:
        return 1 if level == 0 else 0

    def budget(self) -> int:
        return sum(self.cost(u, lvl) for u, lvl in enumerate(self._start))

    def uniform(self) -> list[int]:
        return list(self._start)

    def values(self, assignment: Sequence[int]) -> list[float]:
        return [1.0 if int(lvl) == 0 else 0.0 for lvl in assignment]

    def dropped(self, assignment: Sequence[int]) -> list[int]:
        """Block indices the assignment drops."""
        return [i for i, lvl in zip(self.indices, assignment) if int(lvl) == 1]

    def apply(self, model: nn.Module, assignment: Sequence[int]) -> None:
        container = model.get_submodule(self.path)
        for i, lvl in zip(self.indices, assignment):
            block = container[i]
            bypassed = "forward" in vars(block)
            if int(lvl) == 1 and not bypassed:
                block.forward = _Bypass(block, self._shapes)
            elif int(lvl) == 0 and bypassed:
                del block.forward

    def restore(self, model: nn.Module) -> None:
        container = model.get_submodule(self.path)
        for i in self.indices:
            if "forward" in vars(container[i]):
                del container[i].forward

    def to_step(self, assignment: Sequence[int]) -> dict[str, Any]:
        options: dict[str, Any] = {"method": "explicit", "blocks": self.dropped(assignment)}
        container = getattr(self.step.config, "container", None)
        if container is not None:
            options["container"] = container
        return {"drop_layers": options}

    def close(self) -> None:
        self._shapes.clear()


def _wrapped_choice(model: nn.Module, step: Any, blocks: Any, ctx: RunContext) -> list[int]:
    """The blocks the wrapped step itself would drop."""
    cfg = step.config
    if step.method == "explicit":
        return explicit_blocks(blocks, cfg.blocks)
    k = cfg.count(len(blocks))
    if not 1 <= k <= len(blocks.droppable) or k >= len(blocks):
        raise ConfigError(f"step.drop_layers.n = {k}: {blocks.path} has {len(blocks)} blocks, "
                          f"{len(blocks.droppable)} of them droppable; valid range is "
                          f"[1, {min(len(blocks.droppable), len(blocks) - 1)}]")
    batches = [] if step.method == "last" else list(ctx.require("calib", "search"))[: cfg.max_calib_batches]
    return choose_blocks(score_blocks(model, blocks, step.method, batches), k)


@register_space("drop_layers", ("influence", "quality", "last", "explicit"))
def drop_space(model: nn.Module, step: Any, ctx: RunContext, options: SpaceOptions) -> DropLevelSpace:
    """Units = droppable blocks; start = the wrapped step's own choice (see the module docstring)."""
    blocks = find_blocks(model, getattr(step.config, "container", None))
    chosen = _wrapped_choice(model, step, blocks, ctx)
    if len(chosen) == len(blocks.droppable):
        raise ConfigError(f"step.drop_layers drops all {len(chosen)} droppable blocks of {blocks.path}: "
                          f"nothing left to search")
    return DropLevelSpace(step, blocks.path, blocks.droppable, chosen)
