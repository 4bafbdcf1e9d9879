"""Config of ``prune: {method: wanda}`` (and the base of the other calibration-based pruners)."""
from __future__ import annotations

import dataclasses

from slimkit.core.config import StepConfig, check_choice, check_range, check_str_list
from slimkit.core.errors import ConfigError
from slimkit.core.per_layer import PerLayer, is_per_layer
from slimkit.prune.pattern import parse_pattern
from slimkit.prune.sparsity import check_sparsity

__all__ = ["CalibratedPruneConfig", "WandaPruneConfig", "ALLOCATIONS"]

#: how a scalar ``sparsity`` is spread over the layers
ALLOCATIONS = ("uniform", "owl")


@dataclasses.dataclass
class CalibratedPruneConfig(StepConfig):
    """Options shared by pruners that read calibration activations (wanda, sparsegpt).

    The output head (``lm_head``, a Hugging Face model's output embeddings, a Linear tied to an
    embedding) and the embeddings are left alone unless ``targets`` names them explicitly (by
    name or ``re:`` regex), as Wanda, SparseGPT and llm-compressor do; each is reported as skipped.

    ``sparsity`` is one number for every selected layer, or a per-layer map ``{rule: sparsity}``
    (module names or ``re:`` regexes, first match wins; :mod:`slimkit.core.per_layer`):

    ```yaml
    - prune: {method: wanda, sparsity: {"model.layers.0": 0.3, "re:.*\\.mlp\\..*": 0.65, "re:.*": 0.5}}
    ```
    ``allocation: owl`` spreads a scalar target over the decoder blocks by their outlier ratio
    (OWL, Yin et al. 2024; :mod:`slimkit.prune.owl`): blocks with more Wanda-score outliers (above
    ``owl_threshold`` × the block's mean score) get less sparsity, within a band of ±``owl_lambda``
    around the target, shifted so that the weighted mean sparsity is exactly the target:

    ```yaml
    - prune: {method: wanda, sparsity: 0.7, allocation: owl, owl_lambda: 0.08, owl_threshold: 5}
    ```
    The report's ``resolved_sparsity`` is the found allocation as a per-layer map, replayable as
    ``sparsity:`` with ``allocation: uniform``.
    """

    method: str = ""
    sparsity: PerLayer = 0.5
    pattern: str | None = None
    targets: list[str] | None = None
    ignore: list[str] = dataclasses.field(default_factory=list)
    layer_types: list[str] = dataclasses.field(default_factory=lambda: ["Linear"])
    allocation: str = "uniform"
    owl_lambda: float = 0.08
    owl_threshold: float = 5.0

    def validate(self) -> None:
        parse_pattern(self.pattern)
        check_sparsity(self.sparsity, self.pattern)
        self._validate_allocation()
        if self.targets is not None:
            check_str_list("targets", self.targets)
        check_str_list("ignore", self.ignore)
        for t in check_str_list("layer_types", self.layer_types):
            check_choice("layer_types[]", t, ["Linear"])

    def _validate_allocation(self) -> None:
        check_choice("allocation", self.allocation, ALLOCATIONS)
        check_range("owl_lambda", self.owl_lambda, 0.0, 0.5)
        check_range("owl_threshold", self.owl_threshold, 0.0, None, lo_open=True)
        if self.allocation != "owl":
            return
        if is_per_layer(self.sparsity):
            raise ConfigError("allocation = 'owl' spreads one target sparsity over the blocks; sparsity must be a "
                              f"number, got a per-layer map {self.sparsity!r}")
        if self.pattern is not None:
            raise ConfigError(f"allocation = 'owl' cannot be combined with pattern = {self.pattern!r} (an N:M pattern "
                              "fixes every layer's sparsity)")


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
