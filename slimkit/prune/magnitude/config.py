"""Config of ``prune: {method: magnitude}``."""
from __future__ import annotations

import dataclasses

from slimkit.core.config import StepConfig, check_choice, check_str_list
from slimkit.core.errors import ConfigError
from slimkit.core.per_layer import PerLayer, is_per_layer
from slimkit.prune.pattern import parse_pattern
from slimkit.prune.sparsity import check_sparsity

__all__ = ["MagnitudePruneConfig", "PRUNABLE_TYPES"]

#: layer classes magnitude pruning handles (by class name, as written in recipes)
PRUNABLE_TYPES = ("Linear", "Conv1d", "Conv2d", "Conv3d")


@dataclasses.dataclass
class MagnitudePruneConfig(StepConfig):
    """Zero the ``sparsity`` fraction of smallest-magnitude weights.

    ```yaml
    - prune: {method: magnitude, sparsity: 0.5, scope: global, ignore: [lm_head]}
    ```
    ``scope: layer`` prunes every selected layer to exactly ``sparsity``; ``scope: global`` ranks all
    selected weights together (layers end up with different sparsities). ``targets`` / ``ignore``
    use the module selection grammar (names, ``re:`` regexes, class names).
    The output head (``lm_head``, a Hugging Face model's output embeddings, a Linear tied to an
    embedding) and the embeddings are left alone unless ``targets`` names them explicitly (by
    name or ``re:`` regex), as Wanda, SparseGPT and llm-compressor do; each is reported as skipped.
    ``pattern: "2:4"`` (or ``"4:8"``, any ``N:M``) keeps the N largest of every M consecutive weights
    of each row instead (sparsity is then 1 - N/M; ``sparsity`` and ``scope`` are not used):

    ```yaml
    - prune: {method: magnitude, pattern: "2:4", ignore: [lm_head]}
    ```
    ``sparsity`` may also be a per-layer map ``{rule: sparsity}`` (module names or ``re:`` regexes,
    first match wins, every selected layer matched, every rule used; see
    :mod:`slimkit.core.per_layer`), with ``scope: layer`` and no ``pattern``:

    ```yaml
    - prune: {method: magnitude, sparsity: {"re:.*\\.mlp\\..*": 0.7, "re:.*": 0.4}}
    ```
    """

    method: str = "magnitude"
    sparsity: PerLayer = 0.5
    scope: str = "layer"
    targets: list[str] | None = None
    ignore: list[str] = dataclasses.field(default_factory=list)
    layer_types: list[str] = dataclasses.field(default_factory=lambda: ["Linear", "Conv2d"])
    pattern: str | None = None

    def validate(self) -> None:
        check_sparsity(self.sparsity, self.pattern)
        check_choice("scope", self.scope, ["layer", "global"])
        if is_per_layer(self.sparsity) and self.scope == "global":
            raise ConfigError("sparsity: a per-layer map needs scope = 'layer'; scope = 'global' ranks every layer "
                              "against one threshold")
        if self.targets is not None:
            check_str_list("targets", self.targets)
        check_str_list("ignore", self.ignore)
        for t in check_str_list("layer_types", self.layer_types):
            check_choice("layer_types[]", t, PRUNABLE_TYPES)
        parse_pattern(self.pattern)
        if self.pattern is not None and self.scope == "global":
            raise ConfigError("scope = 'global' cannot be combined with pattern; an N:M pattern is per group of M weights")
