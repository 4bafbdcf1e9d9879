"""Math of gradual pruning: the cubic schedule and a training callback that keeps masks applied."""
from __future__ import annotations

import torch
from torch import nn

from slimkit.prune.importance import MagnitudeImportance
from slimkit.prune.magnitude.core import apply_mask, layer_mask

__all__ = ["cubic_sparsity", "GradualMasker"]


def cubic_sparsity(step: int, s_init: float, s_final: float, start: int, end: int) -> float:
    """Zhu & Gupta's ``s_t = s_f + (s_i - s_f)(1 - (t - t0)/(t1 - t0))³``, clamped to [t0, t1]."""
    if step <= start:
        return s_init
    if step >= end:
        return s_final
    frac = (step - start) / (end - start)
    return s_final + (s_init - s_final) * (1.0 - frac) ** 3


class GradualMasker:
    """Training callback: raises sparsity on schedule, re-applies masks after every optimizer step."""

    def __init__(self, layers: list[tuple[str, nn.Module]], s_init: float, s_final: float,
                 start: int, end: int, every: int) -> None:
        self.layers = layers
        self.s_init, self.s_final, self.start, self.end, self.every = s_init, s_final, start, end, every
        self.masks: dict[str, torch.Tensor] = {}
        self.current = 0.0
        self.history: list[tuple[int, float]] = []

    def _recompute(self, sparsity: float, step: int) -> None:
        importance = MagnitudeImportance()
        self.masks = {name: layer_mask(importance(name, m), sparsity) for name, m in self.layers}
        self.current = sparsity
        self.history.append((step, round(sparsity, 4)))

    def _apply(self) -> None:
        for name, m in self.layers:
            apply_mask(m.weight, self.masks[name])

    def on_train_start(self, model: nn.Module) -> None:
        self._recompute(cubic_sparsity(0, self.s_init, self.s_final, self.start, self.end), 0)
        self._apply()

    def on_step_end(self, step: int, model: nn.Module, loss: float) -> None:
        due = self.start <= step <= self.end and (step - self.start) % self.every == 0
        if due or step == self.end:
            target = cubic_sparsity(step, self.s_init, self.s_final, self.start, self.end)
            if target > self.current:
                self._recompute(target, step)
        self._apply()

    def on_train_end(self, model: nn.Module) -> None:
        if self.current < self.s_final:  # training stopped before the schedule ended: finish it
            self._recompute(self.s_final, -1)
        self._apply()
