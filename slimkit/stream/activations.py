"""Calibration inputs of the current block, in memory or spilled to disk, saved for resuming.

Each calibrated step keeps its own inputs (the hidden states of every calibration batch entering
the current block, computed by the blocks already compressed *up to that step*, as the
whole-model runner computes them). The other arguments a block receives (attention mask,
position embeddings) are the same for every block and stay in memory. After each block the new
hidden states are written as safetensors files under the work directory (that is what a resumed
run starts from); when all steps' hidden states together exceed ``max_activation_bytes`` they are
not kept in memory at all and are read back one batch at a time (spilled).
"""
from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from slimkit.core.errors import CheckpointError
from slimkit.core.sequential import next_block_inputs

__all__ = ["ActivationStore"]

_KEY = "hidden_states"


def _hidden(args: tuple, kwargs: dict) -> torch.Tensor:
    return args[0] if args else kwargs[_KEY]


def _with_hidden(args: tuple, kwargs: dict, hidden: torch.Tensor) -> tuple[tuple, dict]:
    return ((hidden,) + tuple(args[1:]), kwargs) if args else (args, {**kwargs, _KEY: hidden})


class ActivationStore:
    """One calibrated step's block inputs: templates in memory, hidden states in memory or on disk."""

    def __init__(self, root: Path, states: list[tuple[tuple, dict]], spill: bool, block: int) -> None:
        self.root, self.spill, self.block = root, spill, block
        self.templates = [_with_hidden(a, k, None) for a, k in states]  # hidden states held apart
        self.hidden: list[torch.Tensor | None] = [_hidden(a, k) for a, k in states]
        self._save(block, self.hidden)
        if spill:
            self.hidden = [None] * len(states)

    def _dir(self, block: int) -> Path:
        return self.root / f"in{block:05d}"

    def _save(self, block: int, hidden: list[torch.Tensor | None]) -> None:
        folder = self._dir(block)
        folder.mkdir(parents=True, exist_ok=True)
        for j, h in enumerate(hidden):
            if h is not None:
                save_file({_KEY: h.contiguous()}, str(folder / f"b{j:05d}.safetensors"))

    def _get(self, j: int) -> torch.Tensor:
        h = self.hidden[j]
        return h if h is not None else self._load(self.block, j)

    def _load(self, block: int, j: int) -> torch.Tensor:
        path = self._dir(block) / f"b{j:05d}.safetensors"
        if not path.is_file():
            raise CheckpointError(f"calibration inputs {path} are missing (the work directory was altered)")
        return load_file(str(path))[_KEY]

    def items(self) -> Iterator[tuple[tuple, dict]]:
        """The block's (args, kwargs) per calibration batch, hidden states read back when spilled."""
        for j, (args, kwargs) in enumerate(self.templates):
            yield _with_hidden(args, kwargs, self._get(j))

    def advance(self, block: nn.Module) -> None:
        """Run ``block`` on its inputs: its outputs become the next block's inputs (saved to disk)."""
        folder = self._dir(self.block + 1)
        folder.mkdir(parents=True, exist_ok=True)
        fresh: list[torch.Tensor | None] = []
        with torch.no_grad():
            for j, (args, kwargs) in enumerate(self.items()):
                out = _hidden(*next_block_inputs(block, args, kwargs))
                save_file({_KEY: out.contiguous()}, str(folder / f"b{j:05d}.safetensors"))
                fresh.append(None if self.spill else out)
        self.hidden = fresh
        self.block += 1

    def drop_before(self, block: int) -> None:
        """Delete saved inputs of blocks before ``block`` (once the progress record has moved on)."""
        for old in self.root.glob("in*"):
            if old.name < f"in{block:05d}":
                shutil.rmtree(old, ignore_errors=True)

    def restore(self, block: int) -> None:
        """Resume at ``block``: its saved inputs replace the captured ones."""
        self.block = block
        loaded = [self._load(block, j) for j in range(len(self.templates))]
        self.hidden = [None] * len(loaded) if self.spill else loaded
