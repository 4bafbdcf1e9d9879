"""The level-space interface of the ``search`` step: what an evolutionary search over per-unit
levels needs from a wrapped step (prune, quantize, drop_layers).

A *unit* is what gets its own level (a layer for sparsity or bits, a block for depth). Each unit
has ``n_levels[u]`` levels, level 0 the least compressed. A space turns an *assignment* (one level
index per unit) into weights in a model (:meth:`LevelSpace.apply`), into an exact budget
(:meth:`LevelSpace.cost`) and into the ordinary recipe step that reproduces it without searching
(:meth:`LevelSpace.to_step`).

The budget contract: the search only ever evaluates assignments with
``sum(cost(u, a[u]) for u) == budget()``, where ``budget()`` is the wrapped step's own global budget
(total nonzeros, bytes, blocks kept) at ``uniform()``. Mutations keep it exact by *level switches*:
one unit moves one level and another unit moves one level the other way with exactly the opposite
cost change (e.g. two layers of the same shape). A space therefore makes its levels so that such
equal cost steps exist (same-shaped layers share a grid); units without any partner simply keep
their uniform level.

Spaces register a factory per (step, methods) with :func:`register_space`; modules of this package
whose name ends in ``_levels`` (``prune_levels``, ``quant_levels``, ``drop_levels``) are imported by
:func:`load_spaces`, so adding a space never edits a shared list.

```python
@register_space("prune", ("wanda", "sparsegpt", "magnitude"))
def prune_space(model, step, ctx, options) -> LevelSpace: ...
```
"""
from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from torch import nn

from slimkit.core.errors import ConfigError

if TYPE_CHECKING:
    from slimkit.core.context import RunContext

__all__ = ["LevelSpace", "SpaceOptions", "SpaceFactory", "register_space", "space_factory", "spaces_for",
           "load_spaces", "assignment_cost"]


@runtime_checkable
class LevelSpace(Protocol):
    """Per-unit levels of one wrapped step, with an exact cost per level.

    Attributes:
        units: the searched units, e.g. layer names or block indices written as str.
        n_levels: number of levels per unit (level 0 = least compressed).
        value_name: what :meth:`values` reports, e.g. ``"sparsity"``, ``"bits"``, ``"kept"``.
    """

    units: list[str]
    n_levels: list[int]
    value_name: str

    def cost(self, unit: int, level: int) -> int:
        """Exact budget units of ``unit`` at ``level`` (nonzeros, bytes, blocks kept)."""
        ...

    def budget(self) -> int:
        """The wrapped step's exact global budget, in the units of :meth:`cost` (= cost of uniform)."""
        ...

    def uniform(self) -> list[int]:
        """The assignment of the wrapped step as written (its budget is :meth:`budget`)."""
        ...

    def values(self, assignment: Sequence[int]) -> list[float]:
        """The human-readable level of each unit (sparsity, bits, 1/0 kept) for reports and plots."""
        ...

    def apply(self, model: nn.Module, assignment: Sequence[int]) -> None:
        """Put the assigned levels' weights into ``model`` in place (fast: only changed units)."""
        ...

    def restore(self, model: nn.Module) -> None:
        """Put ``model`` back to the weights it had when the space was built."""
        ...

    def to_step(self, assignment: Sequence[int]) -> dict[str, Any]:
        """The ordinary recipe step (a one-key mapping, e.g. ``{"prune": {...}}``) that produces
        this assignment when run normally, without any search."""
        ...

    def close(self) -> None:
        """Release the level database (memory, temporary files). Safe to call twice."""
        ...


@dataclasses.dataclass
class SpaceOptions:
    """What the search step passes to a space factory besides the model and the wrapped step.

    ``levels`` / ``level_step`` are the search config's fields, interpreted by each space (for
    sparsity: ``levels`` levels on each side of the target, ``level_step`` apart; for bits: the
    candidate bit widths); ``None`` means the space's default. ``calib`` is the calibration data
    (a list of model inputs) for spaces whose levels are computed from activations. ``storage``
    (``auto`` | ``memory`` | ``disk``) and ``memory_limit_mb`` say where a level database may live:
    ``auto`` spills to a temporary directory when it would exceed ``memory_limit_mb``.
    """

    levels: Any = None
    level_step: float | None = None
    calib: list[Any] | None = None
    seed: int = 0
    progress: bool = False
    storage: str = "auto"
    memory_limit_mb: int = 1024
    #: ``sequential``: each block's levels are computed on the inputs of the earlier blocks at their
    #: uniform level (as the wrapped step runs); ``dense``: on the uncompressed model's inputs
    database: str = "sequential"

    def calibration(self, ctx: RunContext) -> list[Any]:
        """The batches a level database is computed from: ``calib`` when the search step set it (it
        may hold some batches back for the fitness, see ``fitness_holdout``), else the run's."""
        return list(self.calib) if self.calib is not None else list(ctx.require("calib", "search"))


#: ``factory(model, step, ctx, options) -> LevelSpace``; ``step`` is the validated
#: :class:`slimkit.core.recipe.Step` of the wrapped step, ``ctx`` the run context
SpaceFactory = Callable[..., LevelSpace]

_SPACES: dict[tuple[str, str], SpaceFactory] = {}
_loaded = False


def register_space(step: str, methods: Sequence[str]) -> Callable[[SpaceFactory], SpaceFactory]:
    """Decorator registering a level-space factory for ``step`` with each of ``methods``."""

    def decorate(factory: SpaceFactory) -> SpaceFactory:
        for method in methods:
            _SPACES[(step, method)] = factory
        return factory

    return decorate


def load_spaces() -> None:
    """Import every ``slimkit.search.*_levels`` module so that its spaces register themselves."""
    global _loaded
    if _loaded:
        return
    package = importlib.import_module("slimkit.search")  # not `import ... as`: sk.search (a function) shadows it

    for info in pkgutil.iter_modules(package.__path__):
        if not info.ispkg and info.name.endswith("_levels"):
            importlib.import_module(f"slimkit.search.{info.name}")
    _loaded = True


def spaces_for(step: str) -> list[str]:
    """Methods of ``step`` that have a level space."""
    load_spaces()
    return sorted(m for s, m in _SPACES if s == step)


def space_factory(step: str, method: str, *, field: str = "step") -> SpaceFactory:
    """The factory for ``step``/``method``, or a :class:`ConfigError` naming what has levels."""
    load_spaces()
    steps = sorted({s for s, _ in _SPACES})
    if step not in steps:
        raise ConfigError(f"{field}: step {step!r} cannot be searched; valid wrapped steps are {steps}")
    factory = _SPACES.get((step, method))
    if factory is None:
        raise ConfigError(f"{field}: {step} method {method!r} has no level space to search; "
                          f"methods with levels are {spaces_for(step)}")
    return factory


def assignment_cost(space: LevelSpace, assignment: Sequence[int]) -> int:
    """Total cost of an assignment (equals ``space.budget()`` for every candidate the search makes)."""
    return sum(space.cost(u, int(level)) for u, level in enumerate(assignment))
