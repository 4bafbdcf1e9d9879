"""Config of ``quantize: {method: smoothquant}``."""
from __future__ import annotations

import dataclasses

from slimkit.core.config import StepConfig, check_bool, check_choice, check_range, check_str_list
from slimkit.quantize.observers import OBSERVERS

__all__ = ["SmoothQuantConfig"]


@dataclasses.dataclass
class SmoothQuantConfig(StepConfig):
    """SmoothQuant W8A8: migrate activation outliers into the weights with strength ``alpha``,
    then int8 weights (per output channel) and int8 activations on torch's int8 kernels.

    ```yaml
    - quantize: {method: smoothquant, alpha: 0.5, activations: static, ignore: [lm_head]}
    ```
    ``alpha`` in [0, 1]: 0 leaves activations alone, 1 moves all their range into the weights.
    ``activations: static`` uses one calibrated uint8 range per layer (min/max of the smoothed
    calibration activations) on fbgemm ``quantized::linear``; ``per_token`` computes one scale
    per row at run time on ``torch._int_mm``. Needs ``calib`` data.
    """

    method: str = "smoothquant"
    alpha: float = 0.5
    activations: str = "static"
    weight_observer: str = "minmax"
    per_channel: bool = True
    targets: list[str] | None = None
    ignore: list[str] = dataclasses.field(default_factory=list)
    quantize_tied: bool = False

    def validate(self) -> None:
        check_range("alpha", self.alpha, 0.0, 1.0)
        check_choice("activations", self.activations, ["static", "per_token"])
        check_choice("weight_observer", self.weight_observer, OBSERVERS)
        check_bool("per_channel", self.per_channel)
        check_bool("quantize_tied", self.quantize_tied)
        if self.targets is not None:
            check_str_list("targets", self.targets)
        check_str_list("ignore", self.ignore)
