"""Config of ``prune: {method: activation}``."""
from __future__ import annotations

import dataclasses

from slimkit.core.config import StepConfig, check_choice, check_range, check_str_list

__all__ = ["ActivationPruneConfig"]


@dataclasses.dataclass
class ActivationPruneConfig(StepConfig):
    """Output-based pruning: zero the output units whose activations are weakest on calibration data.

    ```yaml
    - prune: {method: activation, sparsity: 0.3, ignore: [lm_head, classifier]}
    ```
    For every selected Linear (output feature) or Conv2d (filter), the ``sparsity`` fraction of
    units with the smallest mean ``|activation|`` over the calibration data lose their whole weight
    row / filter and bias entry. The shapes stay (use ``method: structured, importance:
    activation`` to remove units physically); sparse storage shrinks the checkpoint.
    The output head (``lm_head``, a Hugging Face model's output embeddings, a Linear tied to an
    embedding) and the embeddings are left alone unless ``targets`` names them explicitly (by
    name or ``re:`` regex), as Wanda, SparseGPT and llm-compressor do; each is reported as skipped.
    """

    method: str = "activation"
    sparsity: float = 0.3
    targets: list[str] | None = None
    ignore: list[str] = dataclasses.field(default_factory=list)
    layer_types: list[str] = dataclasses.field(default_factory=lambda: ["Linear", "Conv2d"])

    def validate(self) -> None:
        check_range("sparsity", self.sparsity, 0.0, 1.0, hi_open=True)
        if self.targets is not None:
            check_str_list("targets", self.targets)
        check_str_list("ignore", self.ignore)
        for t in check_str_list("layer_types", self.layer_types):
            check_choice("layer_types[]", t, ["Linear", "Conv2d"])
