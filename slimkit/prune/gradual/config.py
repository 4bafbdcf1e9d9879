"""Config of ``prune: {method: gradual}``."""
from __future__ import annotations

import dataclasses

from slimkit.core.config import check_choice, check_int, check_range, check_str_list
from slimkit.core.errors import ConfigError
from slimkit.train.options import TrainOptions

__all__ = ["GradualPruneConfig"]


@dataclasses.dataclass
class GradualPruneConfig(TrainOptions):
    """Gradual magnitude pruning during fine-tuning (Zhu & Gupta 2017), cubic sparsity schedule.

    ```yaml
    - prune: {method: gradual, sparsity: 0.8, initial_sparsity: 0.0, steps: 200, lr: 1.0e-4,
              prune_start: 0, prune_end: 150, prune_every: 10, ignore: [lm_head]}
    ```
    Between optimizer steps ``prune_start`` and ``prune_end`` (default: 3/4 of the training), every
    ``prune_every`` steps the layer-wise sparsity is raised to
    ``s_t = s_f + (s_i - s_f) · (1 - (t - t0) / (t1 - t0))³`` and masks are recomputed by magnitude;
    masks are re-applied after every optimizer step, so pruned weights stay exactly zero. All
    training-loop options (:class:`TrainOptions`) apply; the loss is the supervised one (HF causal
    LM batches without ``labels`` train on next-token prediction).
    The output head (``lm_head``, a Hugging Face model's output embeddings, a Linear tied to an
    embedding) and the embeddings are left alone unless ``targets`` names them explicitly (by
    name or ``re:`` regex), as Wanda, SparseGPT and llm-compressor do; each is reported as skipped.
    """

    method: str = "gradual"
    sparsity: float = 0.5
    initial_sparsity: float = 0.0
    prune_start: int = 0
    prune_end: int | None = None
    prune_every: int = 10
    targets: list[str] | None = None
    ignore: list[str] = dataclasses.field(default_factory=list)
    layer_types: list[str] = dataclasses.field(default_factory=lambda: ["Linear", "Conv2d"])

    def validate(self) -> None:
        check_choice("method", self.method, ["gradual"])
        self.validate_training()
        check_range("sparsity", self.sparsity, 0.0, 1.0, hi_open=True)
        check_range("initial_sparsity", self.initial_sparsity, 0.0, self.sparsity)
        check_int("prune_start", self.prune_start, 0)
        check_int("prune_every", self.prune_every, 1)
        if self.prune_end is not None:
            check_int("prune_end", self.prune_end, 0)
            if self.prune_end <= self.prune_start:
                raise ConfigError(f"prune_end = {self.prune_end} must be greater than prune_start = {self.prune_start}")
        if self.targets is not None:
            check_str_list("targets", self.targets)
        check_str_list("ignore", self.ignore)
        for t in check_str_list("layer_types", self.layer_types):
            check_choice("layer_types[]", t, ["Linear", "Conv1d", "Conv2d", "Conv3d"])
