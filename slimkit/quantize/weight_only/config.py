"""Options shared by every weight-only method (rtn, gptq, awq, mixed)."""
from __future__ import annotations

import dataclasses

from slimkit.core.config import StepConfig, check_bool, check_choice, check_int, check_str_list

__all__ = ["WeightOnlyConfig", "RUNTIMES"]

RUNTIMES = ["auto", "kernel", "dequant"]


@dataclasses.dataclass
class WeightOnlyConfig(StepConfig):
    """``bits`` 2-8, ``group_size`` input columns per scale (``null``: one scale per output
    channel; need not divide the layer width), ``symmetric`` zero point, ``targets``/``ignore``.

    Embeddings and a tied ``lm_head`` stay float32 (reported as skipped) unless ``lm_head: true``
    (an untied ``head_bits`` copy of the head, round-to-nearest) or ``embeddings: true`` (the
    embedding table stored at ``head_bits``, dequantized row by row on lookup). ``runtime``:
    ``auto`` | ``kernel`` | ``dequant`` (see :mod:`slimkit.quantize.weight_only.layer`).
    ``clip_search``: 0 fits each group to its min/max; ``n`` > 0 also tries ``n`` shrunk ranges
    (down to half) and keeps the one with the least rounding error, weighted by each input's
    calibration energy where the method has it (GPTQ, AWQ).
    """

    method: str = ""
    bits: int = 4
    group_size: int | None = 128
    symmetric: bool = False
    targets: list[str] | None = None
    ignore: list[str] = dataclasses.field(default_factory=list)
    lm_head: bool = False
    embeddings: bool = False
    head_bits: int = 8
    runtime: str = "auto"
    clip_search: int = 0

    def validate(self) -> None:
        check_int("bits", self.bits, 2, 8)
        if self.group_size is not None:
            check_int("group_size", self.group_size, 1, None)
        check_bool("symmetric", self.symmetric)
        if self.targets is not None:
            check_str_list("targets", self.targets)
        check_str_list("ignore", self.ignore)
        check_bool("lm_head", self.lm_head)
        check_bool("embeddings", self.embeddings)
        check_int("head_bits", self.head_bits, 2, 8)
        check_choice("runtime", self.runtime, RUNTIMES)
        check_int("clip_search", self.clip_search, 0, 100)
