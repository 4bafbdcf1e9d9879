"""Config of ``share_weights: {method: cross_layer}``."""
from __future__ import annotations

import dataclasses

from slimkit.core.config import StepConfig, check_choice, check_int
from slimkit.core.errors import ConfigError

__all__ = ["CrossLayerShareConfig"]


@dataclasses.dataclass
class CrossLayerShareConfig(StepConfig):
    """Make each run of ``group_size`` consecutive blocks share one set of parameters (ALBERT-style).

    ```yaml
    - share_weights: {method: cross_layer, group_size: 2, mode: mean}
    ```
    ``mode: mean`` gives the group the mean of its members' parameters; ``mode: first`` keeps the
    first block's. The blocks stay separate modules (norms, hooks and KV-cache slots are per
    block), but their parameters are the same tensors, so the checkpoint stores them once.
    Sharing changes the function; follow it with ``finetune`` or ``distill`` to recover quality.
    ``container`` names the block stack when it is not found automatically.
    """

    method: str = "cross_layer"
    group_size: int = 2
    mode: str = "mean"
    container: str | None = None

    def validate(self) -> None:
        check_int("group_size", self.group_size, 2)
        check_choice("mode", self.mode, ["mean", "first"])
        if self.container is not None and not isinstance(self.container, str):
            raise ConfigError(f"container must be a module path string, got {self.container!r}")
