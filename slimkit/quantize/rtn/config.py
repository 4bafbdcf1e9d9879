"""Config of ``quantize: {method: rtn}``."""
from __future__ import annotations

import dataclasses

from slimkit.quantize.weight_only.config import WeightOnlyConfig

__all__ = ["RTNConfig"]


@dataclasses.dataclass
class RTNConfig(WeightOnlyConfig):
    """Weight-only round-to-nearest: each group of ``group_size`` weights gets a scale (and zero
    point unless ``symmetric``) from its min/max; no data needed.

    ```yaml
    - quantize: {method: rtn, bits: 4, group_size: 64, symmetric: false}
    - quantize: {method: rtn, bits: 8, group_size: null, symmetric: true}   # int8 per channel
    ```
    """

    method: str = "rtn"
