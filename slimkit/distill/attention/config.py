"""Config of ``distill: {method: attention}``."""
from __future__ import annotations

import dataclasses

from slimkit.core.config import check_choice, check_int, check_range
from slimkit.core.errors import ConfigError
from slimkit.distill.options import DistillOptions

__all__ = ["AttentionKDConfig"]


@dataclasses.dataclass
class AttentionKDConfig(DistillOptions):
    """Attention-map distillation for transformers (MiniLM / TinyBERT): KL between the student's and
    the teacher's head-averaged attention distributions, plus logit KD.

    ```yaml
    - distill: {method: attention, layer_map: {0: 1, 1: 3, 2: 5}, attention_weight: 1.0,
                logit_weight: 1.0, temperature: 2.0, steps: 200, lr: 1.0e-4}
    ```
    ``layer_map`` maps student layer index -> teacher layer index; by default the last student
    layer pairs with the last teacher layer and the rest are spread evenly. The models run with
    eager attention during the step (attention maps must be materialised).
    """

    method: str = "attention"
    layer_map: dict[int, int] | None = None
    attention_weight: float = 1.0

    def validate(self) -> None:
        check_choice("method", self.method, ["attention"])
        self.validate_distill()
        check_range("attention_weight", self.attention_weight, 0.0, lo_open=True)
        if self.layer_map is not None:
            if not isinstance(self.layer_map, dict) or not self.layer_map:
                raise ConfigError(f"layer_map must be a non-empty mapping of student layer -> teacher layer, "
                                  f"got {self.layer_map!r}")
            self.layer_map = {_index("layer_map key", k): _index("layer_map value", v) for k, v in self.layer_map.items()}


def _index(name: str, value: object) -> int:
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    return check_int(name, value, 0)
