"""Config of ``quantize: {method: mixed}``."""
from __future__ import annotations

import dataclasses

from slimkit.core.config import check_bool, check_int, check_range
from slimkit.core.errors import ConfigError
from slimkit.quantize.weight_only.config import WeightOnlyConfig

__all__ = ["MixedConfig"]


@dataclasses.dataclass
class MixedConfig(WeightOnlyConfig):
    """Per-layer bit width chosen from measured sensitivity: every selected Linear gets one of
    ``bits_choices`` (or stays float32 when ``allow_float``), round-to-nearest per group, so that
    exactly one budget holds:

    * ``target_bytes``: bytes of the model's tensors after quantization (≈ checkpoint bytes);
    * ``target_ratio``: the same budget as a fraction of the float32 model's tensor bytes;
    * ``max_quality_drop``: the largest relative increase of calibration perplexity (0.05 = +5 %);
      the smallest model on the sensitivity-ordered upgrade path that meets it is chosen.

    Sensitivity of a layer at ``b`` bits is its output error on calibration data,
    ``tr(ΔW H ΔWᵀ)`` with ``H = XᵀX`` gathered block by block. ``bits`` is not used (see ``bits_choices``).
    The output head and input embeddings are stored at ``head_bits`` (int8 by default, see
    :class:`WeightOnlyConfig`), outside the allocation; ``head_bits: null`` is refused here (there
    is no single ``bits`` to follow).

    ```yaml
    - quantize: {method: mixed, bits_choices: [3, 4, 8], group_size: 64, target_ratio: 0.25}
    - quantize: {method: mixed, bits_choices: [4, 8], allow_float: true, max_quality_drop: 0.05}
    ```
    """

    method: str = "mixed"
    bits_choices: list[int] = dataclasses.field(default_factory=lambda: [4, 8])
    allow_float: bool = False
    target_bytes: int | None = None
    target_ratio: float | None = None
    max_quality_drop: float | None = None
    eval_batches: int = 2

    def validate(self) -> None:
        super().validate()
        if not isinstance(self.bits_choices, list) or not self.bits_choices:
            raise ConfigError(f"bits_choices must be a non-empty list of integers in [2, 8], got {self.bits_choices!r}")
        for b in self.bits_choices:
            check_int("bits_choices[]", b, 2, 8)
        check_bool("allow_float", self.allow_float)
        if self.head_bits is None:
            raise ConfigError("head_bits = null (same as bits) has no meaning for mixed, which picks bits per layer; "
                              "give head_bits in [2, 8] (default 8)")
        given = [n for n in ("target_bytes", "target_ratio", "max_quality_drop") if getattr(self, n) is not None]
        if len(given) != 1:
            raise ConfigError(f"mixed needs exactly one budget of target_bytes, target_ratio, max_quality_drop; got {given or 'none'}")
        if self.target_bytes is not None:
            check_int("target_bytes", self.target_bytes, 1, None)
        if self.target_ratio is not None:
            check_range("target_ratio", self.target_ratio, 0.0, 1.0, lo_open=True)
        if self.max_quality_drop is not None:
            check_range("max_quality_drop", self.max_quality_drop, 0.0, None)
        check_int("eval_batches", self.eval_batches, 1, None)
