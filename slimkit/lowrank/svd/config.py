"""Config of ``low_rank: {method: svd}``."""
from __future__ import annotations

import dataclasses

from slimkit.core.config import StepConfig, check_int, check_range, check_str_list
from slimkit.core.errors import ConfigError

__all__ = ["LowRankSVDConfig"]


@dataclasses.dataclass
class LowRankSVDConfig(StepConfig):
    """Replace each selected ``nn.Linear`` (W: [out, in]) by ``Linear(in, r) -> Linear(r, out)``.

    ```yaml
    - low_rank: {method: svd, energy: 0.95}                        # keep 95% of sum(s^2)
    - low_rank: {method: svd, params_ratio: 0.5}                   # each layer keeps <= 50% of its params
    - low_rank: {method: svd, rank: 32, targets: ["re:.*mlp.*"]}   # fixed rank
    ```
    Give exactly one of ``energy`` (smallest rank whose singular values keep that fraction of the
    squared Frobenius norm), ``params_ratio`` (the largest rank whose two factors hold at most that
    fraction of the layer's weights) or ``rank``. ``rank_multiple`` rounds ranks up (friendlier
    GEMM shapes). A layer where factorizing would not save parameters is left alone and reported.
    The output head (``lm_head``, a Hugging Face model's output embeddings, a Linear tied to an
    embedding) and the embeddings are left alone unless ``targets`` names them explicitly (by
    name or ``re:`` regex), as the pruning steps do; each is reported as skipped.
    A Linear whose weight is tied to another module is never factorized (that would untie it and
    store the matrix twice): it is skipped and reported, and naming it in ``targets`` is a ConfigError.
    """

    method: str = "svd"
    energy: float | None = None
    params_ratio: float | None = None
    rank: int | None = None
    rank_multiple: int = 1
    targets: list[str] | None = None
    ignore: list[str] = dataclasses.field(default_factory=list)

    def validate(self) -> None:
        given = [k for k in ("energy", "params_ratio", "rank") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ConfigError(f"low_rank: give exactly one of energy, params_ratio or rank (got {given or 'none'})")
        if self.energy is not None:
            check_range("energy", self.energy, 0.0, 1.0, lo_open=True)
        if self.params_ratio is not None:
            check_range("params_ratio", self.params_ratio, 0.0, 1.0, lo_open=True, hi_open=True)
        if self.rank is not None:
            check_int("rank", self.rank, 1)
        check_int("rank_multiple", self.rank_multiple, 1, 256)
        if self.targets is not None:
            check_str_list("targets", self.targets)
        check_str_list("ignore", self.ignore)
