"""Config of ``drop_layers``."""
from __future__ import annotations

import dataclasses

from slimkit.core.config import StepConfig, check_choice, check_int, check_range
from slimkit.core.errors import ConfigError

__all__ = ["DropLayersConfig", "CRITERIA"]

CRITERIA = ("influence", "quality", "last", "explicit")


@dataclasses.dataclass
class DropLayersConfig(StepConfig):
    """Remove ``n`` (or a ``fraction`` of the) blocks of the model's block stack.

    ```yaml
    - drop_layers: {method: influence, n: 4}            # ShortGPT block influence on calib data
    - drop_layers: {method: quality, fraction: 0.1}     # each block removed alone, output cosine measured
    - drop_layers: {method: last, n: 4}                 # baseline: the last n blocks
    - drop_layers: {method: explicit, blocks: [3, 7, 12]}   # exactly these blocks (e.g. a search result)
    ```
    ``influence`` scores block ``i`` by ``1 - cos(input_i, output_i)`` over calibration tokens and
    drops the lowest. ``quality`` removes each candidate alone and measures ``1 - cos`` of the
    model output against the intact model on calibration data (one pass per block; slower).
    ``container`` names the block stack when it is not found automatically (``model.layers``,
    ``encoder.layer``, ``features`` ...). ``max_calib_batches`` bounds the calibration passes.
    ``explicit`` drops the listed ``blocks`` (indices into the block stack, distinct, in any order;
    checked against the stack's length when the step runs) and needs no data; ``n`` / ``fraction``
    are not used with it, and ``blocks`` only with it.
    """

    method: str = "influence"
    n: int | None = None
    fraction: float | None = None
    container: str | None = None
    max_calib_batches: int = 8
    blocks: list[int] | None = None

    def validate(self) -> None:
        check_choice("method", self.method, CRITERIA)
        if self.method == "explicit" or self.blocks is not None:
            self._validate_explicit()
        elif (self.n is None) == (self.fraction is None):
            raise ConfigError("drop_layers: give exactly one of n (a block count) or fraction (of the blocks)")
        if self.n is not None:
            check_int("n", self.n, 1)
        if self.fraction is not None:
            check_range("fraction", self.fraction, 0.0, 1.0, lo_open=True, hi_open=True)
        if self.container is not None and not isinstance(self.container, str):
            raise ConfigError(f"container must be a module path string, got {self.container!r}")
        check_int("max_calib_batches", self.max_calib_batches, 1)

    def _validate_explicit(self) -> None:
        if self.method != "explicit":
            raise ConfigError(f"blocks = {self.blocks!r} is only used with method = 'explicit' (method is "
                              f"{self.method!r}); drop n or fraction blocks, or list them with method: explicit")
        given = [f for f in ("n", "fraction") if getattr(self, f) is not None]
        if given:
            raise ConfigError(f"drop_layers: method = 'explicit' drops the listed blocks; {given} not allowed with it")
        if not isinstance(self.blocks, list) or not self.blocks:
            raise ConfigError(f"blocks must be a non-empty list of block indices, got {self.blocks!r}")
        for i in self.blocks:
            check_int("blocks[]", i, 0)
        repeated = sorted({i for i in self.blocks if self.blocks.count(i) > 1})
        if repeated:
            raise ConfigError(f"blocks = {self.blocks!r} lists block(s) {repeated} more than once; "
                              "give distinct indices")

    def count(self, n_blocks: int) -> int:
        """How many blocks to drop out of ``n_blocks``."""
        if self.blocks is not None:
            return len(self.blocks)
        return self.n if self.n is not None else max(1, int(round(self.fraction * n_blocks)))
