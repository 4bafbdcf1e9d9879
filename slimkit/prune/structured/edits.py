"""The replayable ``prune_channels`` edit: slice the recorded module dimensions on a fresh model."""
from __future__ import annotations

from typing import Any

import torch_pruning as tp
from torch import nn

from slimkit.io.edits import register_edit_op

__all__ = ["replay_prune_channels"]


@register_edit_op("prune_channels")
def replay_prune_channels(model: nn.Module, record: dict[str, Any]) -> None:
    """Apply ``record["slices"]``: ``[module path, "prune_out_channels"|"prune_in_channels", indices]``.

    The same Torch-Pruning per-layer functions that pruned the original model slice the fresh one
    (weights, biases, BatchNorm running stats, ``in_features``/``out_channels``/``groups`` attributes),
    so ``load_state_dict(strict=True)`` then fits exactly. No graph tracing is needed at load time.
    """
    for path, handler, idxs in record["slices"]:
        module = model.get_submodule(path)
        pruner = tp.pruner.function.PrunerBox[tp.ops.module2type(module)]
        getattr(pruner, handler)(module, list(idxs))
