"""Config of ``prune: {method: wanda}`` (and the base of the other calibration-based pruners)."""
from __future__ import annotations

import dataclasses

from slimkit.core.config import StepConfig, check_choice, check_range, check_str_list
from slimkit.prune.pattern import parse_pattern

__all__ = ["CalibratedPruneConfig", "WandaPruneConfig"]


@dataclasses.dataclass
class CalibratedPruneConfig(StepConfig):
    """Options shared by pruners that read calibration activations (wanda, sparsegpt).

    The output head (``lm_head``, a Hugging Face model's output embeddings, a Linear tied to an
    embedding) and the embeddings are left alone unless ``targets`` names them explicitly (by
    name or ``re:`` regex), as Wanda, SparseGPT and llm-compressor do; each is reported as skipped.
    """

    method: str = ""
    sparsity: float = 0.5
    pattern: str | None = None
    targets: list[str] | None = None
    ignore: list[str] = dataclasses.field(default_factory=list)
    layer_types: list[str] = dataclasses.field(default_factory=lambda: ["Linear"])

    def validate(self) -> None:
        check_range("sparsity", self.sparsity, 0.0, 1.0, hi_open=True)
        parse_pattern(self.pattern)
        if self.targets is not None:
            check_str_list("targets", self.targets)
        check_str_list("ignore", self.ignore)
        for t in check_str_list("layer_types", self.layer_types):
            check_choice("layer_types[]", t, ["Linear"])


@dataclasses.dataclass
class WandaPruneConfig(CalibratedPruneConfig):
    """Wanda: prune by ``|W| · ‖X‖`` per output row, using calibration inputs (no weight update).

    ```yaml
    - prune: {method: wanda, sparsity: 0.5}
    - prune: {method: wanda, pattern: "2:4", ignore: [lm_head]}     # N:M semi-structured
    ```
    Each output row of every selected Linear loses exactly ``sparsity`` of its weights (Wanda's
    per-output comparison group); with ``pattern`` the N largest scores of every M are kept.
    """

    method: str = "wanda"
