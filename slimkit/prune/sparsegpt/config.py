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
    blocks of ``blocksize`` (the mask is chosen per block, ``sparsity`` of each block, rounded so
    that the layer loses exactly ``round(sparsity * numel)`` weights) and the
    remaining weights are updated to compensate (OBS update with the inverse Hessian ``(XᵀX + λI)⁻¹``,
    ``λ = percdamp · mean(diag XᵀX)``). Per-layer maps and ``allocation: owl`` as for Wanda:

    ```yaml
    - prune: {method: sparsegpt, sparsity: {"re:model\\.layers\\.[0-3]\\..*": 0.55, "re:.*": 0.72}}
    - prune: {method: sparsegpt, sparsity: 0.7, allocation: owl, owl_lambda: 0.08}
    ```
    """

    method: str = "sparsegpt"
    blocksize: int = 128
    percdamp: float = 0.01

    def validate(self) -> None:
        super().validate()
        check_int("blocksize", self.blocksize, 1, 65536)
        check_range("percdamp", self.percdamp, 0.0, 1.0, lo_open=True)
