"""Config of ``quantize: {method: dynamic_int8}``."""
from __future__ import annotations

import dataclasses

from slimkit.core.config import StepConfig, check_bool, check_choice, check_str_list

__all__ = ["DynamicInt8Config", "TIED_REASON"]

#: why an int8 method (dynamic, static, SmoothQuant) leaves a tied Linear alone by default
TIED_REASON = "weight is tied to another module (set quantize_tied: true to store an int8 copy)"


@dataclasses.dataclass
class DynamicInt8Config(StepConfig):
    """int8 weights (symmetric, per output channel or per tensor), activations quantized at run
    time per token (``torch._int_mm``) or per tensor (fbgemm ``quantized::linear_dynamic``); both
    are integer GEMMs on the CPU.

    ```yaml
    - quantize: {method: dynamic_int8, per_channel: true, activations: per_token, ignore: [lm_head]}
    ```
    A Linear whose weight is tied to another module (e.g. ``lm_head`` tied to the embedding) is
    skipped and reported unless ``quantize_tied: true``, which stores an int8 copy and unties it.
    """

    method: str = "dynamic_int8"
    per_channel: bool = True
    targets: list[str] | None = None
    ignore: list[str] = dataclasses.field(default_factory=list)
    quantize_tied: bool = False
    activations: str = "per_token"

    def validate(self) -> None:
        check_choice("activations", self.activations, ["per_token", "per_tensor"])
        check_bool("per_channel", self.per_channel)
        check_bool("quantize_tied", self.quantize_tied)
        if self.targets is not None:
            check_str_list("targets", self.targets)
        check_str_list("ignore", self.ignore)
