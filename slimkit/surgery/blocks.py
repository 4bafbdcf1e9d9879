"""Block discovery and the block-level structural edits (drop, insert) with their replay ops.

A *block* is one element of the repeated stack of a model: a Llama/Mistral decoder layer
(``model.layers``), a BERT encoder layer (``encoder.layer``), a MobileNetV2 inverted residual
(``features``). Only blocks whose output has the shape of their input can be removed or inserted
without touching their neighbours; :attr:`BlockList.droppable` lists those.

Hugging Face configs carry the block count (``num_hidden_layers``; Llama's forward loops over
``layers[:config.num_hidden_layers]``), and attention modules carry ``layer_idx`` for the KV
cache. Both are kept in sync after every edit. Because ``sk.save`` writes the *current* config as
the base reference, a base rebuilt from a saved config already has the edited block count; the
replay ops then only renumber (``config_synced`` in the record tells them so).
"""
from __future__ import annotations

import copy
import dataclasses
from typing import Any

from torch import nn

from slimkit.core.errors import CheckpointError, UnsupportedModelError
from slimkit.io.edits import register_edit_op

__all__ = ["BlockList", "find_blocks", "drop_blocks", "insert_blocks", "renumber_blocks"]

#: where known architectures keep their block stack (tried in order)
KNOWN_CONTAINERS = ("model.layers", "model.decoder.layers", "transformer.h", "encoder.layer",
                    "bert.encoder.layer", "roberta.encoder.layer", "encoder.layers", "layers", "features", "blocks")

#: HF config fields holding the number of blocks
_COUNT_FIELDS = ("num_hidden_layers", "n_layer", "num_layers")


@dataclasses.dataclass
class BlockList:
    """The block stack of a model: where it lives and which blocks keep their input shape."""

    path: str
    container: nn.Module  # nn.ModuleList or nn.Sequential
    droppable: list[int]

    def __len__(self) -> int:
        return len(self.container)


def _shape_preserving(block: nn.Module) -> bool:
    """Whether a block maps its input to an output of the same shape (so it can be removed)."""
    if hasattr(block, "use_res_connect"):  # MobileNetV2 / EfficientNet inverted residuals
        return bool(block.use_res_connect)
    if isinstance(block, (nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.ReLU6)) or hasattr(block, "out_channels"):
        return False  # stems and transitions of a CNN change shapes or are not residual
    return True  # transformer layers: hidden -> hidden


def find_blocks(model: nn.Module, container: str | None = None) -> BlockList:
    """The repeated block stack (``container`` overrides the search); raises if none is found."""
    paths = [container] if container else list(KNOWN_CONTAINERS)
    for path in paths:
        try:
            found = model.get_submodule(path)
        except AttributeError:
            continue
        if isinstance(found, (nn.ModuleList, nn.Sequential)) and len(found) > 0:
            droppable = [i for i, b in enumerate(found) if _shape_preserving(b)]
            return BlockList(path, found, droppable)
    if container:
        raise UnsupportedModelError(f"container = {container!r}: no nn.ModuleList / nn.Sequential of blocks at that path")
    raise UnsupportedModelError(
        f"{type(model).__name__}: cannot find its block stack (looked for {list(KNOWN_CONTAINERS)}); "
        "name it with the 'container' option")


def _root_config(model: nn.Module) -> Any:
    return getattr(model, "config", None)


def _sync_config(model: nn.Module, old_count: int, new_count: int) -> bool:
    """Write the new block count into the HF config field that held the old one; True if synced."""
    config = _root_config(model)
    if config is None:
        return False
    for field in _COUNT_FIELDS:
        if getattr(config, field, None) == old_count:
            setattr(config, field, new_count)
            return True
    return False


def renumber_blocks(container: nn.Module) -> None:
    """Set every ``layer_idx`` attribute inside block ``i`` to ``i`` (KV-cache slots follow order)."""
    for i, block in enumerate(container):
        for module in block.modules():
            if isinstance(getattr(module, "layer_idx", None), int):
                module.layer_idx = i


def _rebuild(container: nn.Module, blocks: list[nn.Module]) -> nn.Module:
    return nn.Sequential(*blocks) if isinstance(container, nn.Sequential) else nn.ModuleList(blocks)


def _set_container(model: nn.Module, path: str, new: nn.Module) -> None:
    from slimkit.io.edits import replace_module

    replace_module(model, path, new)


def _sync_layer_types(model: nn.Module, keep: list[int]) -> None:
    """Keep a per-layer ``config.layer_types`` list aligned with the surviving blocks."""
    config = _root_config(model)
    types = getattr(config, "layer_types", None) if config is not None else None
    if isinstance(types, list) and len(types) >= max(keep, default=-1) + 1:
        config.layer_types = [types[i] for i in keep]


def drop_blocks(model: nn.Module, path: str, indices: list[int]) -> dict[str, Any]:
    """Remove blocks ``indices`` from the stack at ``path``; returns the edit record."""
    container = model.get_submodule(path)
    before = len(container)
    keep = [i for i in range(before) if i not in set(indices)]
    _set_container(model, path, _rebuild(container, [container[i] for i in keep]))
    renumber_blocks(model.get_submodule(path))
    synced = _sync_config(model, before, len(keep))
    if synced:
        _sync_layer_types(model, keep)
    return {"op": "drop_blocks", "container": path, "indices": sorted(indices), "before": before,
            "config_synced": synced}


def insert_blocks(model: nn.Module, path: str, after: list[int]) -> tuple[dict[str, Any], list[int]]:
    """Insert a copy of block ``a`` right after it, for each ``a`` in ``after`` (original indices).

    Returns the edit record and the new indices of the inserted blocks (their weights are the
    copies' until the caller re-initialises them).
    """
    container = model.get_submodule(path)
    before = len(container)
    blocks: list[nn.Module] = []
    new_positions: list[int] = []
    order: list[int] = []
    for i, block in enumerate(container):
        blocks.append(block)
        order.append(i)
        for _ in range(after.count(i)):
            new_positions.append(len(blocks))
            blocks.append(copy.deepcopy(block))
            order.append(i)
    _set_container(model, path, _rebuild(container, blocks))
    renumber_blocks(model.get_submodule(path))
    synced = _sync_config(model, before, len(blocks))
    if synced:
        _sync_layer_types(model, order)
    return ({"op": "insert_blocks", "container": path, "after": sorted(after), "before": before,
             "config_synced": synced}, new_positions)


def _replay_guard(model: nn.Module, record: dict[str, Any]) -> bool:
    """True when the edit must be applied; False when the rebuilt base already has it."""
    n = len(model.get_submodule(record["container"]))
    if n == int(record["before"]):
        return True
    if record.get("config_synced"):
        return False  # base rebuilt from the saved (already edited) config: nothing to redo
    raise CheckpointError(f"{record['op']} on {record['container']!r}: expected {record['before']} blocks, found {n}")


@register_edit_op("drop_blocks")
def _replay_drop(model: nn.Module, record: dict[str, Any]) -> None:
    if _replay_guard(model, record):
        drop_blocks(model, record["container"], [int(i) for i in record["indices"]])
    else:
        renumber_blocks(model.get_submodule(record["container"]))


@register_edit_op("insert_blocks")
def _replay_insert(model: nn.Module, record: dict[str, Any]) -> None:
    if _replay_guard(model, record):
        insert_blocks(model, record["container"], [int(i) for i in record["after"]])
    else:
        renumber_blocks(model.get_submodule(record["container"]))
