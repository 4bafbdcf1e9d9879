"""Config of ``prune: {method: sparsegpt}``."""
from __future__ import annotations

import dataclasses

from slimkit.core.config import check_int, check_range
from slimkit.prune.wanda.config import CalibratedPruneConfig

__all__ = ["SparseGPTPruneConfig"]


@dataclasses.dataclass
class SparseGPTPruneConfig(CalibratedPruneConfig):
    """SparseGPT (Frantar & Alistarh 2023): Hessian-based mask selection with weight reconstruction.

    ```yaml
    - prune: {method: sparsegpt, sparsity: 0.5, ignore: [lm_head]}
    - prune: {method: sparsegpt, pattern: "2:4", blocksize: 128, percdamp: 0.01, ignore: [lm_head]}
    ```
    Layers are processed block by block on calibration data; within a layer, columns are pruned in
    blocks of ``blocksize`` (the mask is chosen per block, exactly ``sparsity`` of each block) and the
    remaining weights are updated to compensate (OBS update with the inverse Hessian ``(XᵀX + λI)⁻¹``,
    ``λ = percdamp · mean(diag XᵀX)``).
    """

    method: str = "sparsegpt"
    blocksize: int = 128
    percdamp: float = 0.01

    def validate(self) -> None:
        super().validate()
        check_int("blocksize", self.blocksize, 1, 65536)
        check_range("percdamp", self.percdamp, 0.0, 1.0, lo_open=True)
