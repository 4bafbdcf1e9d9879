"""Config of ``distill: {method: feature}``."""
from __future__ import annotations

import dataclasses

from slimkit.core.config import check_choice, check_range
from slimkit.core.errors import ConfigError
from slimkit.distill.options import DistillOptions

__all__ = ["FeatureKDConfig"]


@dataclasses.dataclass
class FeatureKDConfig(DistillOptions):
    """Hidden-state / feature distillation (FitNets, TinyBERT): MSE between student features and the
    teacher's, through learned linear projections where the widths differ, plus logit KD.

    ```yaml
    - distill:
        method: feature
        layer_map: {"conv2": "conv3", "fc1": "fc1"}   # student module -> teacher module
        feature_weight: 1.0       # weight of the feature term
        logit_weight: 1.0         # weight of the logit KD term (0 = features only)
        projection: auto          # auto (Linear where widths differ) | always | none
        temperature: 4.0
        alpha: 0.7
        epochs: 3
        lr: 1.0e-3
    ```
    Without ``layer_map`` the outputs of the block stacks are paired: student block ``i`` of
    ``S`` with teacher block ``round((i + 1) * T / S) - 1`` of ``T``. Feature maps [B, C, H, W]
    are projected over channels and must have the same spatial size.
    """

    method: str = "feature"
    layer_map: dict[str, str] | None = None
    feature_weight: float = 1.0
    projection: str = "auto"

    def validate(self) -> None:
        check_choice("method", self.method, ["feature"])
        self.validate_distill()
        check_range("feature_weight", self.feature_weight, 0.0, lo_open=True)
        check_choice("projection", self.projection, ["auto", "always", "none"])
        if self.layer_map is not None:
            if not isinstance(self.layer_map, dict) or not self.layer_map or not all(
                    isinstance(k, str) and isinstance(v, str) for k, v in self.layer_map.items()):
                raise ConfigError(f"layer_map must be a non-empty mapping of student module name -> teacher "
                                  f"module name, got {self.layer_map!r}")
