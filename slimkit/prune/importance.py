"""Importance scores: small callables independent of the pruner (Torch-Pruning's ``Importance``).

An importance maps ``(name, module)`` to a tensor of scores shaped like the module's weight; the
pruner removes the lowest-scoring entries. Later methods (Wanda, Taylor, activations) add their
own callables with the same signature.
"""
from __future__ import annotations

from typing import Protocol

import torch
from torch import nn

__all__ = ["Importance", "MagnitudeImportance"]


class Importance(Protocol):
    def __call__(self, name: str, module: nn.Module) -> torch.Tensor: ...


class MagnitudeImportance:
    """``|W|`` elementwise (``p=1``) or ``W**2`` (``p=2``); same ranking, kept for clarity."""

    def __init__(self, p: int = 1) -> None:
        self.p = p

    def __call__(self, name: str, module: nn.Module) -> torch.Tensor:
        w = module.weight.detach()
        return w.abs() if self.p == 1 else w.pow(2)
