"""Configs of ``quantize: {method: fp16}`` and ``quantize: {method: bf16}``."""
from __future__ import annotations

import dataclasses

from slimkit.core.config import StepConfig, check_bool

__all__ = ["Fp16Config", "Bf16Config"]


@dataclasses.dataclass
class Fp16Config(StepConfig):
    """Cast the whole model to IEEE half precision (halves the checkpoint).

    ```yaml
    - quantize: {method: fp16, outputs_fp32: true}
    ```
    Floating inputs are cast to fp16 on the way in; with ``outputs_fp32: true`` (default) the
    outputs come back as float32. On CPUs without native fp16 arithmetic this is slower than fp32
    (the benchmark says by how much); prefer ``bf16`` there.
    """

    method: str = "fp16"
    outputs_fp32: bool = True

    def validate(self) -> None:
        check_bool("outputs_fp32", self.outputs_fp32)


@dataclasses.dataclass
class Bf16Config(StepConfig):
    """Cast the whole model to bfloat16 (fp32's range, 8 bits of mantissa; halves the checkpoint).

    ```yaml
    - quantize: {method: bf16}
    ```
    Runs on oneDNN's bf16 kernels (fast on CPUs with AVX512-BF16 / AMX).
    """

    method: str = "bf16"
    outputs_fp32: bool = True

    def validate(self) -> None:
        check_bool("outputs_fp32", self.outputs_fp32)
