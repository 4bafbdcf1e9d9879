"""Config of ``quantize: {method: qat}``."""
from __future__ import annotations

import dataclasses

from slimkit.core.config import check_bool, check_choice, check_int, check_range, check_str_list
from slimkit.train.options import TrainOptions

__all__ = ["QATConfig", "QAT_LAYER_TYPES"]

QAT_LAYER_TYPES = ("Linear", "Conv2d")


@dataclasses.dataclass
class QATConfig(TrainOptions):
    """Quantization-aware training of b-bit weights (straight-through estimator) with the shared
    training loop (every :class:`~slimkit.train.options.TrainOptions` field), then conversion to
    stored integers.

    ```yaml
    - quantize: {method: qat, bits: 4, per_channel: true, epochs: 3, lr: 1.0e-3, optimizer: adamw,
                 distill: false, ignore: [lm_head]}
    ```
    ``distill: false`` trains on the labelled ``train`` batches (the model's own loss or
    cross-entropy); ``distill: true`` matches the outputs of the original model (KL divergence of
    the softmax at ``temperature``), so unlabelled batches suffice. 8-bit Linears end as int8
    dynamic layers (int8 GEMM); other widths are stored packed and run dequantized.
    """

    method: str = "qat"
    bits: int = 8
    per_channel: bool = True
    layer_types: list[str] = dataclasses.field(default_factory=lambda: ["Linear"])
    targets: list[str] | None = None
    ignore: list[str] = dataclasses.field(default_factory=list)
    distill: bool = False
    temperature: float = 1.0

    def validate(self) -> None:
        self.validate_training()
        check_int("bits", self.bits, 2, 8)
        check_bool("per_channel", self.per_channel)
        check_bool("distill", self.distill)
        check_range("temperature", self.temperature, 0.0, lo_open=True)
        for t in check_str_list("layer_types", self.layer_types):
            check_choice("layer_types[]", t, QAT_LAYER_TYPES)
        if self.targets is not None:
            check_str_list("targets", self.targets)
        check_str_list("ignore", self.ignore)
