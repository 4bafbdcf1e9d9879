"""Options shared by every weight-only method (rtn, gptq, awq, mixed)."""
from __future__ import annotations

import dataclasses

from slimkit.core.config import StepConfig, check_bool, check_choice, check_int, check_str_list
from slimkit.core.errors import ConfigError
from slimkit.core.per_layer import PerLayer, check_per_layer, is_per_layer

__all__ = ["WeightOnlyConfig", "RUNTIMES"]

RUNTIMES = ["auto", "kernel", "dequant"]


@dataclasses.dataclass
class WeightOnlyConfig(StepConfig):
    """``bits`` 2-8, ``group_size`` input columns per scale (``null``: one scale per output
    channel; need not divide the layer width), ``symmetric`` zero point, ``targets``/``ignore``.

    The output head (``lm_head``) and the input embeddings are stored at ``head_bits`` (int8 by
    default; ``null`` means the same as ``bits``), round-to-nearest per group, as NNCF does for int4
    weight compression: they hold a large share of a small LLM's bytes and are the most sensitive
    to rounding. ``lm_head`` / ``embeddings``: ``null`` (default) quantizes them when the step
    covers the whole model (no ``targets``, or ``targets`` naming them explicitly, and no
    ``ignore`` covering them); ``true`` always; ``false`` keeps them float32 (reported as skipped).
    A tied head and embedding become two ``head_bits`` copies (SmolLM2-135M, int4 g64 body:
    about 22 % of the float32 checkpoint instead of 32 % with a float32 embedding). ``runtime``:
    ``auto`` | ``kernel`` | ``dequant`` (see :mod:`slimkit.quantize.weight_only.layer`).
    ``clip_search``: 0 fits each group to its min/max; ``n`` > 0 also tries ``n`` shrunk ranges
    (down to half) and keeps the one with the least rounding error, weighted by each input's
    calibration energy where the method has it (GPTQ, AWQ).

    ``bits`` may be a per-layer map ``{rule: bits}`` over the quantized Linears (module names or
    ``re:`` regexes, first match wins, every layer matched, every rule used;
    :mod:`slimkit.core.per_layer`); ``group_size`` stays one value, the head and embeddings keep
    ``head_bits`` (which must then be a number):

    ```yaml
    - quantize: {method: gptq, bits: {"re:.*\\.mlp\\.down_proj": 8, "model.layers.0": 4, "re:.*": 3}, group_size: 64}
    ```
    """

    method: str = ""
    bits: PerLayer = 4
    group_size: int | None = 128
    symmetric: bool = False
    targets: list[str] | None = None
    ignore: list[str] = dataclasses.field(default_factory=list)
    lm_head: bool | None = None
    embeddings: bool | None = None
    head_bits: int | None = 8
    runtime: str = "auto"
    clip_search: int = 0

    def validate(self) -> None:
        check_per_layer("bits", self.bits, lambda name, v: check_int(name, v, 2, 8))
        if self.group_size is not None:
            check_int("group_size", self.group_size, 1, None)
        check_bool("symmetric", self.symmetric)
        if self.targets is not None:
            check_str_list("targets", self.targets)
        check_str_list("ignore", self.ignore)
        for name in ("lm_head", "embeddings"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, bool):
                raise ConfigError(f"{name} must be true, false or null (automatic), got {value!r}")
        if self.head_bits is not None:
            check_int("head_bits", self.head_bits, 2, 8)
        elif is_per_layer(self.bits):
            raise ConfigError("head_bits = null means 'the same as bits', which a per-layer bits map does not give; "
                              "give head_bits in [2, 8] (default 8)")
        check_choice("runtime", self.runtime, RUNTIMES)
        check_int("clip_search", self.clip_search, 0, 100)

    def resolved_head_bits(self) -> int:
        """Bits of the output head / embeddings: ``head_bits``, or ``bits`` when it is null."""
        return self.head_bits if self.head_bits is not None else self.bits
