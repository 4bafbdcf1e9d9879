"""Config of ``quantize: {method: static_int8}``."""
from __future__ import annotations

import dataclasses

from slimkit.core.config import StepConfig, check_bool, check_choice, check_range, check_str_list
from slimkit.quantize.observers import OBSERVERS

__all__ = ["StaticInt8Config", "STATIC_LAYER_TYPES"]

#: layer classes static int8 handles (by class name, as written in recipes)
STATIC_LAYER_TYPES = ("Linear", "Conv2d")


@dataclasses.dataclass
class StaticInt8Config(StepConfig):
    """int8 weights and int8 activations whose ranges are fixed from calibration batches.

    ```yaml
    - quantize: {method: static_int8, observer: percentile, percentile: 99.99,
                 weight_observer: minmax, per_channel: true, ignore: [lm_head]}
    ```
    ``observer`` picks the activation range (``minmax`` | ``percentile`` | ``mse``);
    ``weight_observer`` the weight range (same choices), per output channel or per tensor.
    Linear layers run on fbgemm's ``quantized::linear`` with a calibrated uint8 input range;
    Conv2d layers on fbgemm's ``quantized::conv2d`` with uint8 input and output ranges, after a
    following BatchNorm is folded into them (``fold_bn: true``). Needs ``calib`` data.
    """

    method: str = "static_int8"
    observer: str = "minmax"
    percentile: float = 99.99
    weight_observer: str = "minmax"
    per_channel: bool = True
    layer_types: list[str] = dataclasses.field(default_factory=lambda: list(STATIC_LAYER_TYPES))
    targets: list[str] | None = None
    ignore: list[str] = dataclasses.field(default_factory=list)
    fold_bn: bool = True
    quantize_tied: bool = False

    def validate(self) -> None:
        check_choice("observer", self.observer, OBSERVERS)
        check_choice("weight_observer", self.weight_observer, OBSERVERS)
        check_range("percentile", self.percentile, 90.0, 100.0, lo_open=True)
        check_bool("per_channel", self.per_channel)
        check_bool("fold_bn", self.fold_bn)
        check_bool("quantize_tied", self.quantize_tied)
        for t in check_str_list("layer_types", self.layer_types):
            check_choice("layer_types[]", t, STATIC_LAYER_TYPES)
        if self.targets is not None:
            check_str_list("targets", self.targets)
        check_str_list("ignore", self.ignore)
