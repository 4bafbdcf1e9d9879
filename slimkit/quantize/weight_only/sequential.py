"""Statistics hooks for weight-only quantization's sequential calibration.

The block-by-block runner itself is shared with pruning (:mod:`slimkit.core.sequential`); this
module adds what GPTQ / AWQ / mixed need on top: the chosen layers inside a block, and forward
hooks that hand each layer's input to a statistics accumulator.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from slimkit.core.sequential import run_blocks

__all__ = ["run_blocks", "block_layers", "StatsHook"]


def block_layers(block_name: str, block: nn.Module, chosen: dict[str, nn.Module]) -> dict[str, nn.Module]:
    """The chosen layers (by qualified name) that live inside ``block``."""
    prefix = f"{block_name}." if block_name else ""
    return {prefix + n: m for n, m in block.named_modules() if prefix + n in chosen}


class StatsHook:
    """Forward hooks on Linear layers calling ``fn(name, x2d)`` with each input as [tokens, in] float32."""

    def __init__(self, layers: dict[str, nn.Module], fn: Callable[[str, torch.Tensor], None]) -> None:
        self.handles = [m.register_forward_hook(self._make(n, fn)) for n, m in layers.items()]

    @staticmethod
    def _make(name: str, fn: Callable[[str, torch.Tensor], None]) -> Callable[..., None]:
        def hook(_module: nn.Module, args: tuple, _out: Any) -> None:
            x = args[0]
            fn(name, x.detach().reshape(-1, x.shape[-1]).float())
        return hook

    def remove(self) -> None:
        for h in self.handles:
            h.remove()

    def __enter__(self) -> "StatsHook":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.remove()
