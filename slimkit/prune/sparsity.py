"""The ``sparsity`` field of the unstructured pruners: one number, or a per-layer map.

```yaml
- prune: {method: magnitude, sparsity: 0.5}
- prune: {method: wanda, sparsity: {"model.layers.0": 0.3, "re:.*\\.mlp\\..*": 0.65, "re:.*": 0.5}}
```
The map follows :mod:`slimkit.core.per_layer` (first matching rule wins; an unmatched selected
layer or a rule matching no selected layer is a ConfigError). Each value lies in [0, 1). An N:M
``pattern`` fixes the sparsity of every layer to 1 - N/M, so it cannot be combined with a map.
"""
from __future__ import annotations

from typing import Any

from torch import nn

from slimkit.core.config import check_range
from slimkit.core.context import RunContext
from slimkit.core.errors import ConfigError
from slimkit.core.per_layer import check_per_layer, is_per_layer, resolve_and_note

__all__ = ["check_sparsity", "layer_sparsities"]


def _one(name: str, value: Any) -> None:
    check_range(name, value, 0.0, 1.0, hi_open=True)


def check_sparsity(value: Any, pattern: str | None) -> None:
    """Validate ``sparsity`` (number in [0, 1) or ``{rule: number}``) against ``pattern``."""
    check_per_layer("sparsity", value, _one)
    if is_per_layer(value) and pattern is not None:
        raise ConfigError(f"sparsity: a per-layer map cannot be combined with pattern = {pattern!r} (an N:M pattern "
                          "sets every layer to 1 - N/M); give one of them")


def layer_sparsities(value: Any, layers: list[tuple[str, nn.Module]], ctx: RunContext) -> dict[str, float]:
    """The sparsity of every selected layer (see :mod:`slimkit.core.per_layer`)."""
    return {n: float(s) for n, s in resolve_and_note("prune.sparsity", value, [n for n, _ in layers], ctx).items()}
