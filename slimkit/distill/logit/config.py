"""Config of ``distill: {method: logit}``."""
from __future__ import annotations

import dataclasses

from slimkit.core.config import check_choice
from slimkit.distill.options import DistillOptions

__all__ = ["LogitKDConfig"]


@dataclasses.dataclass
class LogitKDConfig(DistillOptions):
    """Logit distillation (Hinton KD): KL at ``temperature``, mixed with the hard-label loss by ``alpha``.
    On unlabeled text a causal LM learns the teacher's next-token distribution at every position.

    ```yaml
    - distill: {method: logit, temperature: 2.0, alpha: 0.5, steps: 300, lr: 1.0e-4, optimizer: adamw,
                scheduler: cosine, warmup_steps: 20, grad_accum: 1, clip_norm: 1.0}
    # DistilBERT-style student from the input model (the input model stays the teacher):
    - distill: {method: logit, keep_every: 2, epochs: 3, lr: 5.0e-4}
    ```
    """

    method: str = "logit"

    def validate(self) -> None:
        check_choice("method", self.method, ["logit"])
        self.validate_distill()
