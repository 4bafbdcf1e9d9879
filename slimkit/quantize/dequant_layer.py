"""Base class for layers whose packed low-bit weights run through a float matmul.

Binary / ternary layers and QAT's 2–7-bit layers store packed integer codes (so the checkpoint
shrinks) but have no integer kernel on this CPU: they dequantize once, cache the float weight, and
call ``F.linear`` / ``F.conv2d``. Their ``slimkit_runtime`` says so. Subclasses set ``self.op``
("linear" or "conv2d"), ``self.conv`` (stride/padding/dilation/groups), ``self.bias`` and define
``dequantized_weight()``.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

__all__ = ["CachedDequantLayer"]


class CachedDequantLayer(nn.Module):
    """Dequantize-once-then-float forward, with the cache dropped on reload and on copy."""

    op: str
    conv: dict[str, Any]
    bias: nn.Parameter | None
    _weight: torch.Tensor | None = None

    def dequantized_weight(self) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        self._weight = None  # new codes: dequantize again at the next call
        super()._load_from_state_dict(*args, **kwargs)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_weight": None}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._weight is None or self._weight.device != x.device:
            self._weight = self.dequantized_weight().to(x.device)  # dequantized once, then cached
        w = self._weight.to(x.dtype)
        b = None if self.bias is None else self.bias.to(x.dtype)
        if self.op == "linear":
            return nn.functional.linear(x, w, b)
        c = self.conv
        return nn.functional.conv2d(x, w, b, tuple(c["stride"]), tuple(c["padding"]), tuple(c["dilation"]), c["groups"])
