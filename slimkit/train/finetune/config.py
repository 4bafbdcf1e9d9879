"""Config of ``finetune: {method: supervised}``."""
from __future__ import annotations

import dataclasses

from slimkit.core.config import check_choice
from slimkit.train.options import TrainOptions

__all__ = ["FinetuneConfig"]


@dataclasses.dataclass
class FinetuneConfig(TrainOptions):
    """Plain supervised training on ``train`` data with the shared loop (all :class:`TrainOptions`).

    ```yaml
    - finetune: {method: supervised, epochs: 2, lr: 1.0e-3, optimizer: sgd, momentum: 0.9,
                 scheduler: cosine, warmup_steps: 10, grad_accum: 1, clip_norm: 1.0}
    ```
    The loss is the model's own loss when batches are dicts with ``labels`` (Hugging Face), else
    cross-entropy of the model's output (logits) against the labels of ``(inputs, labels)`` pairs.
    """

    method: str = "supervised"

    def validate(self) -> None:
        check_choice("method", self.method, ["supervised"])
        self.validate_training()
