"""Configs of ``quantize: {method: binary}`` and ``quantize: {method: ternary}``."""
from __future__ import annotations

import dataclasses

from slimkit.core.config import StepConfig, check_choice, check_range, check_str_list

__all__ = ["BinaryConfig", "TernaryConfig", "LOWBIT_LAYER_TYPES"]

LOWBIT_LAYER_TYPES = ("Linear", "Conv2d")


def _check_selection(cfg: "BinaryConfig | TernaryConfig") -> None:
    if cfg.targets is not None:
        check_str_list("targets", cfg.targets)
    check_str_list("ignore", cfg.ignore)
    for t in check_str_list("layer_types", cfg.layer_types):
        check_choice("layer_types[]", t, LOWBIT_LAYER_TYPES)


@dataclasses.dataclass
class BinaryConfig(StepConfig):
    """1-bit weights ``α_c · sign(w)`` (α_c = mean |w| of output channel c), packed 8 per byte.

    ```yaml
    - quantize: {method: binary, targets: ["re:.*mlp.*"], ignore: [lm_head]}
    ```
    Binarizing a whole pretrained network destroys it; select layers, and heal with ``distill``
    or use ``qat``. Runs as dequantized float weights (no 1-bit kernel in torch).
    """

    method: str = "binary"
    targets: list[str] | None = None
    ignore: list[str] = dataclasses.field(default_factory=list)
    layer_types: list[str] = dataclasses.field(default_factory=lambda: ["Linear"])

    def validate(self) -> None:
        _check_selection(self)


@dataclasses.dataclass
class TernaryConfig(StepConfig):
    """2-bit weights ``α_c · t``, t ∈ {-1, 0, +1} (TWN: zero below ``delta · mean|w_c|``), 4 per byte.

    ```yaml
    - quantize: {method: ternary, delta: 0.7, ignore: [lm_head]}
    ```
    """

    method: str = "ternary"
    delta: float = 0.7
    targets: list[str] | None = None
    ignore: list[str] = dataclasses.field(default_factory=list)
    layer_types: list[str] = dataclasses.field(default_factory=lambda: ["Linear"])

    def validate(self) -> None:
        check_range("delta", self.delta, 0.0, 2.0, hi_open=True)
        _check_selection(self)
