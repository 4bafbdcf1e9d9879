"""Config of ``quantize: {method: awq}``."""
from __future__ import annotations

import dataclasses

from slimkit.core.config import check_int
from slimkit.quantize.weight_only.config import WeightOnlyConfig

__all__ = ["AWQConfig"]


@dataclasses.dataclass
class AWQConfig(WeightOnlyConfig):
    """AWQ: per-input-channel scales ``mean|x|^α`` searched (``grid`` + 1 values of α in [0, 1]) on
    calibration activations, block by block, then group-wise quantization of the scaled weight.
    ``n_tokens`` calibration rows per layer are used for the search; ``clip_search`` then re-fits
    the group ranges (as AWQ's clipping step does).

    ```yaml
    - quantize: {method: awq, bits: 4, group_size: 64, grid: 20, n_tokens: 1024}
    ```
    """

    method: str = "awq"
    grid: int = 20
    n_tokens: int = 1024

    def validate(self) -> None:
        super().validate()
        check_int("grid", self.grid, 1, 1000)
        check_int("n_tokens", self.n_tokens, 16, None)
