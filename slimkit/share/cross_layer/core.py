"""Tying the parameters of same-shape blocks, and its replay op."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from slimkit.core.errors import UnsupportedModelError
from slimkit.io.edits import register_edit_op

__all__ = ["tie_blocks", "shared_parameters", "check_same_shape"]


def check_same_shape(lead: nn.Module, other: nn.Module, names: tuple[str, str]) -> None:
    """Raise naming both blocks unless they have the same parameter names and shapes."""
    a = {n: p.shape for n, p in lead.named_parameters()}
    b = {n: p.shape for n, p in other.named_parameters()}
    if a != b:
        raise UnsupportedModelError(f"blocks {names[0]} and {names[1]} have different parameter shapes; "
                                    "only same-shape blocks can share parameters")


def _set_param(block: nn.Module, name: str, param: nn.Parameter) -> None:
    owner_name, _, leaf = name.rpartition(".")
    owner = block.get_submodule(owner_name) if owner_name else block
    setattr(owner, leaf, param)


def tie_blocks(blocks: list[nn.Module], mode: str = "first") -> None:
    """Make every block of ``blocks`` use the parameter objects of ``blocks[0]``.

    ``mode="mean"`` first sets the shared values to the members' mean.
    """
    lead = blocks[0]
    params = dict(lead.named_parameters(remove_duplicate=False))
    if mode == "mean":
        with torch.no_grad():
            for name, p in params.items():
                members = [dict(b.named_parameters(remove_duplicate=False))[name] for b in blocks]
                p.copy_(torch.stack([m.detach() for m in members]).mean(0))
    for other in blocks[1:]:
        for name, p in params.items():
            _set_param(other, name, p)


def shared_parameters(model: nn.Module) -> int:
    """How many parameter slots point at a tensor already used by another slot."""
    seen: set[int] = set()
    dup = 0
    for _, p in model.named_parameters(remove_duplicate=False):
        dup += id(p) in seen
        seen.add(id(p))
    return dup


@register_edit_op("tie_blocks")
def _replay_tie(model: nn.Module, record: dict[str, Any]) -> None:
    container = model.get_submodule(record["container"])
    for group in record["groups"]:
        tie_blocks([container[int(i)] for i in group], mode="first")  # values come from the checkpoint
