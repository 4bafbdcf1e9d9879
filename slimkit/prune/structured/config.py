"""Config of ``prune: {method: structured}``."""
from __future__ import annotations

import dataclasses

from slimkit.core.config import StepConfig, check_choice, check_int, check_range, check_str_list
from slimkit.core.errors import ConfigError

__all__ = ["StructuredPruneConfig", "GRANULARITIES", "IMPORTANCES"]

GRANULARITIES = ("channel", "neuron")
IMPORTANCES = ("magnitude", "activation", "taylor")


@dataclasses.dataclass
class StructuredPruneConfig(StepConfig):
    """Physically remove whole units, dependency-aware, so the model really gets smaller and faster.

    ```yaml
    - prune: {method: structured, granularity: channel, target_macs: 0.5, importance: magnitude, round_to: 8}
    - prune: {method: structured, granularity: neuron, sparsity: 0.3, importance: activation}
    ```
    ``granularity``: ``channel`` (conv filters; BatchNorm, depthwise/grouped convs and residual adds
    follow through Torch-Pruning's dependency graph) or ``neuron`` (hidden units of transformer
    MLPs: the up/gate projections' outputs and the down projection's inputs). Give either
    ``sparsity`` (fraction of units removed from every prunable group) or ``target_macs`` (fraction
    of the model's MACs to keep; the per-group ratio is found by bisection on measured MACs).
    ``importance``: ``magnitude`` (L2 norm of the group's weights), ``activation`` (mean |output|
    on calibration data) or ``taylor`` (|w · ∂L/∂w| on training batches). ``round_to`` keeps unit
    counts multiples of that number (kernel-friendly widths). Groups whose units feed the model
    output (classifier, pooler, lm_head) are never pruned, so output shapes stay.
    """

    method: str = "structured"
    granularity: str = "channel"
    sparsity: float | None = None
    target_macs: float | None = None
    importance: str = "magnitude"
    round_to: int = 1
    targets: list[str] | None = None
    ignore: list[str] = dataclasses.field(default_factory=list)

    def validate(self) -> None:
        check_choice("granularity", self.granularity, GRANULARITIES)
        check_choice("importance", self.importance, IMPORTANCES)
        if (self.sparsity is None) == (self.target_macs is None):
            raise ConfigError("give exactly one of sparsity (fraction of units removed) or target_macs (fraction of MACs kept)")
        if self.sparsity is not None:
            check_range("sparsity", self.sparsity, 0.0, 1.0, hi_open=True)
        if self.target_macs is not None:
            check_range("target_macs", self.target_macs, 0.0, 1.0, lo_open=True)
        check_int("round_to", self.round_to, 1, 4096)
        if self.targets is not None:
            check_str_list("targets", self.targets)
        check_str_list("ignore", self.ignore)
