"""Config of ``merge_layers``."""
from __future__ import annotations

import dataclasses

from slimkit.core.config import StepConfig, check_bool, check_choice, check_int, check_range, check_str_list
from slimkit.core.errors import ConfigError

__all__ = ["MergeLayersConfig"]


@dataclasses.dataclass
class MergeLayersConfig(StepConfig):
    """Merge layers without (``bn_fold``, ``linear_fold``) or with (``similar``) a change of function.

    ```yaml
    - merge_layers: {method: bn_fold}                        # BatchNorm -> preceding conv/linear, exact
    - merge_layers: {method: linear_fold}                    # Linear -> Linear with nothing between, exact
    - merge_layers: {method: similar, n: 4, merge_size: 2, threshold: 0.9}   # LaCo, needs calib
    ```
    ``bn_fold`` / ``linear_fold`` find producer→consumer pairs by tracing the model with torch.fx
    (the producer's output must feed only the consumer); a model that cannot be traced (most
    Hugging Face models) falls back to adjacent children of ``nn.Sequential`` containers.
    ``linear_fold`` skips pairs whose fused matrix would hold more weights than the two factors
    unless ``allow_growth: true``. ``similar`` (LaCo): from the top of the block stack down, the
    ``merge_size`` consecutive blocks ``l..l+m`` are merged into block ``l`` by parameter
    differences ``θ = θ_l + Σ_k (θ_{l+k} − θ_l)`` and accepted when the model output keeps a
    cosine similarity ≥ ``threshold`` to the original on calibration data; it stops after ``n``
    removed blocks (fewer, reported, when no more merge passes the threshold).
    """

    method: str = "bn_fold"
    n: int = 1
    merge_size: int = 2
    threshold: float = 0.9
    container: str | None = None
    min_block: int = 1
    allow_growth: bool = False
    max_calib_batches: int = 4
    targets: list[str] | None = None
    ignore: list[str] = dataclasses.field(default_factory=list)

    def validate(self) -> None:
        check_choice("method", self.method, ["bn_fold", "linear_fold", "similar"])
        check_int("n", self.n, 1)
        check_int("merge_size", self.merge_size, 2)
        check_range("threshold", self.threshold, -1.0, 1.0)
        check_int("min_block", self.min_block, 0)
        check_bool("allow_growth", self.allow_growth)
        check_int("max_calib_batches", self.max_calib_batches, 1)
        if self.container is not None and not isinstance(self.container, str):
            raise ConfigError(f"container must be a module path string, got {self.container!r}")
        if self.targets is not None:
            check_str_list("targets", self.targets)
        check_str_list("ignore", self.ignore)
