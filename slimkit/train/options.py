"""``TrainOptions``: the validated training knobs every training step (finetune, distill, QAT,
gradual pruning) embeds in its own config, so recipes spell them the same way everywhere.

```yaml
- finetune: {method: supervised, steps: 200, lr: 1.0e-4, optimizer: adamw, scheduler: cosine,
             warmup_steps: 20, grad_accum: 2, clip_norm: 1.0, eval_every: 50, patience: 3,
             checkpoint_dir: runs/ft, checkpoint_every: 50}
# under torchrun, shard parameters / gradients / optimizer state across ranks (FSDP2) instead of DDP;
# eval_every and checkpoint_dir are refused with fsdp (the sharded model is gathered only at the end)
- distill: {method: logit, steps: 300, lr: 1.0e-4, strategy: fsdp}
```

``strategy`` unset means DDP when launched by ``torchrun`` and a plain single process otherwise.
A ``strategy`` set explicitly but run without a process group (no ``torchrun``, ``WORLD_SIZE``
unset) trains in one process, with a warning and a ``strategy`` note in the step's report.
"""
from __future__ import annotations

import dataclasses

from slimkit.core.config import StepConfig, check_bool, check_choice, check_int, check_range
from slimkit.core.errors import ConfigError

__all__ = ["TrainOptions", "OPTIMIZERS", "SCHEDULERS", "STRATEGIES"]

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULERS = ("none", "cosine", "linear", "step")
#: how the loop parallelises under torchrun: DDP, or FSDP (fully_shard) for models too big to replicate
#: (unset: DDP under torchrun, one process otherwise)
STRATEGIES = ("ddp", "fsdp")


@dataclasses.dataclass
class TrainOptions(StepConfig):
    """Training loop knobs (one of ``steps`` / ``epochs``; ``steps`` wins when both are given, and
    neither means one epoch).

    ``steps`` counts optimizer steps (each consumes ``grad_accum`` batches); ``epochs`` counts passes
    over the training batches. ``eval_every`` + ``patience`` stop early on the validation metric
    (``ctx.evaluate`` or the ``validate=`` callable) and restore the best weights.
    ``checkpoint_dir`` + ``checkpoint_every`` save the training state every that many steps and
    resume from the newest complete one when the same run is started again.
    """

    steps: int | None = None
    epochs: float | None = None
    lr: float = 1e-4
    optimizer: str = "adamw"
    momentum: float = 0.9
    weight_decay: float = 0.0
    scheduler: str = "none"
    warmup_steps: int = 0
    step_gamma: float = 0.1
    step_size: int | None = None
    grad_accum: int = 1
    clip_norm: float | None = None
    seed: int = 0
    shuffle: bool = True
    eval_every: int | None = None
    patience: int | None = None
    checkpoint_dir: str | None = None
    checkpoint_every: int | None = None
    strategy: str | None = None

    def validate(self) -> None:
        self.validate_training()

    def validate_training(self) -> None:
        """Validation of the training fields (call it from a subclass's ``validate``)."""
        if self.steps is not None:
            check_int("steps", self.steps, 1)
        if self.epochs is not None:
            check_range("epochs", self.epochs, 0.0, lo_open=True)
        check_range("lr", self.lr, 0.0, lo_open=True)
        check_choice("optimizer", self.optimizer, OPTIMIZERS)
        check_range("momentum", self.momentum, 0.0, 1.0, hi_open=True)
        check_range("weight_decay", self.weight_decay, 0.0)
        check_choice("scheduler", self.scheduler, SCHEDULERS)
        check_int("warmup_steps", self.warmup_steps, 0)
        check_range("step_gamma", self.step_gamma, 0.0, 1.0, lo_open=True)
        if self.step_size is not None:
            check_int("step_size", self.step_size, 1)
        check_int("grad_accum", self.grad_accum, 1)
        if self.clip_norm is not None:
            check_range("clip_norm", self.clip_norm, 0.0, lo_open=True)
        check_int("seed", self.seed, 0)
        check_bool("shuffle", self.shuffle)
        if self.eval_every is not None:
            check_int("eval_every", self.eval_every, 1)
        if self.patience is not None:
            check_int("patience", self.patience, 1)
            if self.eval_every is None:
                raise ConfigError("patience needs eval_every (how often the validation metric is computed)")
        if self.checkpoint_every is not None:
            check_int("checkpoint_every", self.checkpoint_every, 1)
            if self.checkpoint_dir is None:
                raise ConfigError("checkpoint_every needs checkpoint_dir (where the training state is written)")
        if self.checkpoint_dir is not None and not isinstance(self.checkpoint_dir, str):
            raise ConfigError(f"checkpoint_dir must be a path string, got {self.checkpoint_dir!r}")
        if self.strategy is not None:
            check_choice("strategy", self.strategy, STRATEGIES)
        if self.strategy == "fsdp":
            for name in ("eval_every", "checkpoint_dir"):
                if getattr(self, name) is not None:
                    raise ConfigError(f"{name} = {getattr(self, name)!r} is not supported with strategy: fsdp "
                                      f"(the sharded model is gathered only at the end of training); "
                                      f"valid: leave {name} unset, or use strategy: ddp")

    def train_options(self) -> "TrainOptions":
        """The plain :class:`TrainOptions` part of a step config that embeds these fields."""
        names = {f.name for f in dataclasses.fields(TrainOptions)}
        return TrainOptions(**{k: getattr(self, k) for k in names})
