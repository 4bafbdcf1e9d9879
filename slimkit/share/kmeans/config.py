"""Config of ``share_weights: {method: kmeans}``."""
from __future__ import annotations

import dataclasses

from slimkit.core.config import StepConfig, check_bool, check_choice, check_int, check_str_list

__all__ = ["KMeansShareConfig"]


@dataclasses.dataclass
class KMeansShareConfig(StepConfig):
    """Cluster each selected Linear's weights into ``clusters`` shared values (Deep Compression).

    ```yaml
    - share_weights: {method: kmeans, clusters: 16, ignore: [lm_head]}
    ```
    Each layer becomes a :class:`ClusteredLinear`: a float ``codebook`` [k] (a trainable
    parameter, so a later ``finetune`` step fine-tunes the centroids: the gradient of a centroid
    is the sum of its weights' gradients) and ``indices`` packed into ``index_bits(k)`` bits
    (1/2/4/8) per weight, stored as uint8. 16 clusters → 4-bit indices: ~8x fewer weight bytes.
    ``init: linear`` spaces the initial centroids evenly over [min, max] (Deep Compression's
    best-performing init); ``init: quantile`` over the weight distribution's quantiles.
    ``cache_weight: true`` keeps the dequantized weight in memory after the first forward (speed
    of a plain Linear, memory of a float weight); by default every forward rebuilds it.
    """

    method: str = "kmeans"
    clusters: int = 16
    iterations: int = 25
    init: str = "linear"
    cache_weight: bool = False
    targets: list[str] | None = None
    ignore: list[str] = dataclasses.field(default_factory=list)

    def validate(self) -> None:
        check_int("clusters", self.clusters, 2, 256)
        check_int("iterations", self.iterations, 1, 1000)
        check_choice("init", self.init, ["linear", "quantile"])
        check_bool("cache_weight", self.cache_weight)
        if self.targets is not None:
            check_str_list("targets", self.targets)
        check_str_list("ignore", self.ignore)
