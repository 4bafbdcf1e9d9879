"""Config of ``quantize: {method: gptq}``."""
from __future__ import annotations

import dataclasses

from slimkit.core.config import check_bool, check_int, check_range
from slimkit.quantize.weight_only.config import WeightOnlyConfig

__all__ = ["GPTQConfig"]


@dataclasses.dataclass
class GPTQConfig(WeightOnlyConfig):
    """GPTQ: Hessian-based rounding with error feedback, run block by block through the decoder
    layers on calibration data. ``damp`` is the fraction of the mean Hessian diagonal added to it;
    ``act_order`` quantizes columns by decreasing activation energy; ``block_size`` columns per
    lazy-update block. ``group_size`` need not divide the width (SmolLM2's 576 with 128 works).

    ```yaml
    - quantize: {method: gptq, bits: 4, group_size: 64, act_order: true, damp: 0.01}
    ```
    """

    method: str = "gptq"
    damp: float = 0.01
    act_order: bool = True
    block_size: int = 128

    def validate(self) -> None:
        super().validate()
        check_range("damp", self.damp, 0.0, 1.0, lo_open=True)
        check_bool("act_order", self.act_order)
        check_int("block_size", self.block_size, 1, None)
