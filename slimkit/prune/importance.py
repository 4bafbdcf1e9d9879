"""Importance scores: small callables independent of the pruner (Torch-Pruning's ``Importance``).

An importance maps ``(name, module)`` to a tensor of scores shaped like the module's weight; the
pruner removes the lowest-scoring entries. Calibration-based importances (Wanda, activation)
read statistics gathered by small accumulators (:class:`InputNormStats`, :class:`OutputNormStats`)
that :func:`slimkit.prune.calibration.calibrate_and_prune` feeds from forward hooks.
"""
from __future__ import annotations

from typing import Protocol

import torch
from torch import nn

__all__ = [
    "Importance", "MagnitudeImportance", "WandaImportance", "InputNormStats", "OutputNormStats",
    "unit_activation_scores",
]


class Importance(Protocol):
    def __call__(self, name: str, module: nn.Module) -> torch.Tensor: ...


class MagnitudeImportance:
    """``|W|`` elementwise (``p=1``) or ``W**2`` (``p=2``); same ranking, kept for clarity."""

    def __init__(self, p: int = 1) -> None:
        self.p = p

    def __call__(self, name: str, module: nn.Module) -> torch.Tensor:
        w = module.weight.detach()
        return w.abs() if self.p == 1 else w.pow(2)


def _features_last(module: nn.Module, x: torch.Tensor, channels_dim: int = 1) -> torch.Tensor:
    """Rows of features: ``[tokens, features]`` for Linear inputs/outputs, ``[N*H*W, C]`` for convs."""
    if isinstance(module, nn.Linear):
        return x.reshape(-1, x.shape[-1])
    return x.movedim(channels_dim, -1).reshape(-1, x.shape[channels_dim])


class InputNormStats:
    """Sum of squares of each input feature of a Linear over calibration tokens (Wanda's ``‖X_j‖²``)."""

    def __init__(self, in_features: int) -> None:
        self.sq = torch.zeros(in_features, dtype=torch.float64)
        self.tokens = 0

    def add(self, module: nn.Module, inputs: torch.Tensor, output: torch.Tensor) -> None:
        x = _features_last(module, inputs).double()  # [tokens, in]
        self.sq += x.pow(2).sum(0)
        self.tokens += x.shape[0]


class OutputNormStats:
    """Mean ``|y_j|`` of each output unit (Linear feature / conv channel) over calibration data."""

    def __init__(self, out_units: int) -> None:
        self.abs_sum = torch.zeros(out_units, dtype=torch.float64)
        self.count = 0

    def add(self, module: nn.Module, inputs: torch.Tensor, output: torch.Tensor) -> None:
        y = _features_last(module, output).double()  # [tokens or N*H*W, out]
        self.abs_sum += y.abs().sum(0)
        self.count += y.shape[0]

    def mean(self) -> torch.Tensor:
        return self.abs_sum / max(self.count, 1)


class WandaImportance:
    """Wanda (Sun et al. 2023): ``|W_ij| · ‖X_j‖₂`` — weight magnitude times its input's norm."""

    def __init__(self, stats: dict[str, InputNormStats]) -> None:
        self.stats = stats

    def __call__(self, name: str, module: nn.Module) -> torch.Tensor:
        w = module.weight.detach()  # [out, in]
        norm = self.stats[name].sq.sqrt().to(w.dtype)  # [in]
        return w.abs() * norm.reshape(1, -1)


def unit_activation_scores(stats: OutputNormStats) -> torch.Tensor:
    """Per-output-unit importance for activation (output-based) pruning: mean ``|y_j|``."""
    return stats.mean().float()
