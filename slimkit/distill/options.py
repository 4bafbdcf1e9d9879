"""Fields every ``distill`` method shares: the KD temperature and hard-label mix, how the student
is built from the input model, and the training loop options (:class:`TrainOptions`)."""
from __future__ import annotations

import dataclasses

from slimkit.core.config import check_choice, check_int, check_range
from slimkit.core.errors import ConfigError
from slimkit.train.options import TrainOptions

__all__ = ["DistillOptions"]


@dataclasses.dataclass
class DistillOptions(TrainOptions):
    """Shared distillation knobs (see each method's config for a recipe snippet).

    ``temperature`` (> 0) softens both distributions; ``alpha`` in [0, 1] weighs KD against the
    hard-label loss (used only when batches carry labels; unlabeled text is pure token-level KD).
    ``logit_weight`` scales the whole logit term (0 = features / attention only).
    Student construction (DistilBERT style), applied to the input model before training:
    ``keep_every: k`` keeps blocks 0, k, 2k, ...; ``keep_layers: [..]`` keeps those block indices;
    ``shrink_width: f`` removes the fraction ``f`` of MLP neurons (transformers) or conv channels
    (CNNs) by structured pruning. The teacher is ``teacher=`` when given, else the input model.
    """

    temperature: float = 2.0
    alpha: float = 0.5
    logit_weight: float = 1.0
    keep_every: int | None = None
    keep_layers: list[int] | None = None
    shrink_width: float | None = None
    width_granularity: str = "auto"
    lr: float = 1e-4

    def validate(self) -> None:
        self.validate_distill()

    def validate_distill(self) -> None:
        """Shared checks (a method config calls this, then checks its own fields)."""
        self.validate_training()
        check_range("temperature", self.temperature, 0.0, lo_open=True)
        check_range("alpha", self.alpha, 0.0, 1.0)
        check_range("logit_weight", self.logit_weight, 0.0)
        if self.keep_every is not None:
            check_int("keep_every", self.keep_every, 2)
        if self.keep_layers is not None:
            if not isinstance(self.keep_layers, list) or not self.keep_layers:
                raise ConfigError(f"keep_layers must be a non-empty list of block indices, got {self.keep_layers!r}")
            for i in self.keep_layers:
                check_int("keep_layers[]", i, 0)
            if self.keep_every is not None:
                raise ConfigError("give keep_every or keep_layers, not both")
        if self.shrink_width is not None:
            check_range("shrink_width", self.shrink_width, 0.0, 1.0, lo_open=True, hi_open=True)
        check_choice("width_granularity", self.width_granularity, ["auto", "neuron", "channel"])
