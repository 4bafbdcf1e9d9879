"""The model skeleton: every module built, no weight allocated, blocks filled one at a time.

The architecture comes from ``config.json`` under accelerate's ``init_empty_weights`` (parameters
on the meta device, buffers such as rotary frequencies computed for real, exactly as a normal
construction computes them). :func:`fill` loads a module's parameters from the shards in float32
(as ``sk.zoo.load_model`` loads a directory), keeping tied weights tied; :func:`empty` sends a
finished block back to the meta device so its memory is freed.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from slimkit.core.errors import ConfigError, UnsupportedModelError
from slimkit.core.sequential import repeated_blocks
from slimkit.stream.shards import ShardReader

__all__ = ["build_skeleton", "block_list", "fill", "empty", "outer_names"]


def build_skeleton(directory: Path) -> nn.Module:
    """The causal LM of ``directory`` with meta parameters, in eval mode, weights tied as configured."""
    import transformers
    from accelerate import init_empty_weights

    from slimkit.zoo.local import hf_task

    try:
        raw = json.loads((directory / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{directory / 'config.json'} is not readable JSON: {exc}") from None
    if not isinstance(raw, dict) or hf_task(raw) != "causal-lm":
        raise UnsupportedModelError(f"{directory}: streaming handles causal LMs (architectures *ForCausalLM); "
                                    f"config.json names {raw.get('architectures') if isinstance(raw, dict) else raw!r}")
    config = transformers.AutoConfig.from_pretrained(str(directory), local_files_only=True)
    with init_empty_weights(include_buffers=False):
        model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.tie_weights()
    return model.eval()


def block_list(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """(qualified name, list) of the decoder blocks, the unit of streaming."""
    found = repeated_blocks(model)
    if found is None:
        raise UnsupportedModelError(f"{type(model).__name__} has no repeated blocks to stream")
    return found


def outer_names(model: nn.Module, prefix: str) -> list[str]:
    """Parameter names outside the blocks (embeddings, final norm, head), each tied weight once."""
    return [n for n, _ in model.named_parameters() if not n.startswith(prefix + ".")]


def fill(model: nn.Module, names: list[str], reader: ShardReader, tied: dict[str, str] | None = None) -> None:
    """Load the parameters ``names`` (qualified in ``model``) from ``reader`` as float32.

    Every module holding the same meta Parameter receives the same new one, so a tied head stays
    tied to its embedding. ``tied`` maps a name absent from the shards to the name stored instead.
    """
    fresh: dict[int, nn.Parameter] = {}
    for name in names:
        owner, _, leaf = name.rpartition(".")
        old = getattr(model.get_submodule(owner), leaf)
        stored = (tied or {}).get(name, name)
        tensor = reader.tensor(stored)
        if tuple(tensor.shape) != tuple(old.shape):
            raise UnsupportedModelError(f"tensor {stored!r} has shape {tuple(tensor.shape)}, the model expects "
                                        f"{tuple(old.shape)}")
        fresh[id(old)] = nn.Parameter(tensor.to(torch.float32) if tensor.is_floating_point() else tensor,
                                      requires_grad=old.requires_grad)
    for module in model.modules():
        for key, param in list(module._parameters.items()):
            if param is not None and id(param) in fresh:
                module._parameters[key] = fresh[id(param)]


def empty(block: nn.Module) -> None:
    """Free a finished block: its parameters and buffers move to the meta device."""
    block.to(torch.device("meta"))


def missing_tensors(model: nn.Module, reader: ShardReader) -> list[str]:
    """Parameters of ``model`` that no shard holds (a tied head may be stored only as its embedding)."""
    return [n for n, _ in model.named_parameters() if n not in reader]


def describe(model: nn.Module) -> dict[str, Any]:
    """Shape facts for the report."""
    cfg = model.config
    return {k: getattr(cfg, k, None) for k in ("model_type", "hidden_size", "intermediate_size",
                                              "num_hidden_layers", "vocab_size")}
