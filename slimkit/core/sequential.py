"""Sequential (block-by-block) calibration, shared by pruning and quantization.

Wanda / SparseGPT / activation pruning and GPTQ / AWQ / mixed precision all need statistics of
each layer's input on calibration data, computed on the *already compressed* upstream blocks, as
the reference implementations do. Running the whole model with hooks on every layer would hold
every layer's statistics at once; instead the inputs of the first repeated block are captured
once, each block is run on them (its layers hooked and processed), then run again to produce the
next block's inputs. Peak memory: one model copy + one block's statistics and activations.

Repeated blocks are the ``nn.ModuleList`` of same-class modules holding Linear layers with the
most parameters (``model.model.layers`` of a Llama, ``encoder.layer`` of a BERT).
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from slimkit.core.inputs import call_model

__all__ = ["repeated_blocks", "capture_block_inputs", "next_block_inputs", "run_blocks", "no_cache"]

BlockInputs = list[tuple[tuple, dict]]


class _Stop(Exception):
    """Raised by the capture hook: the rest of the model is not needed."""


def repeated_blocks(model: nn.Module) -> tuple[str, nn.ModuleList] | None:
    """(qualified name, list) of the model's repeated blocks, or None when it has none."""
    best: tuple[int, str, nn.ModuleList] | None = None
    for name, module in model.named_modules():
        if not isinstance(module, nn.ModuleList) or len(module) < 2:
            continue
        if len({type(m) for m in module}) != 1 or not any(isinstance(s, nn.Linear) for s in module[0].modules()):
            continue
        size = sum(p.numel() for p in module.parameters())
        if best is None or size > best[0]:
            best = (size, name, module)
    return None if best is None else (best[1], best[2])


def no_cache(model: nn.Module, batch: Any) -> Any:
    """HF decoders: no KV cache during calibration (a cache would grow across blocks)."""
    if isinstance(batch, dict) and getattr(getattr(model, "config", None), "use_cache", None) is not None:
        return {**batch, "use_cache": False}
    return batch


def capture_block_inputs(model: nn.Module, block: nn.Module, calib: Iterable[Any]) -> BlockInputs:
    """The (args, kwargs) ``block`` receives for each calibration batch (the forward stops there)."""
    seen: BlockInputs = []

    def hook(_module: nn.Module, args: tuple, kwargs: dict) -> None:
        seen.append((args, kwargs))
        raise _Stop

    handle = block.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        for batch in calib:
            try:
                call_model(model, no_cache(model, batch))
            except _Stop:
                pass
    finally:
        handle.remove()
    return seen


def next_block_inputs(block: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    """The block's output in place of its hidden-state input (positional, or ``hidden_states=``)."""
    out = block(*args, **kwargs)
    out = out[0] if isinstance(out, (tuple, list)) else out
    if args:
        return (out,) + tuple(args[1:]), kwargs
    return args, {**kwargs, "hidden_states": out}


def run_blocks(model: nn.Module, calib: list[Any], visit: Callable[[str, nn.Module, Callable[[], None]], None],
               progress: Callable[[Iterable[Any], str], Iterable[Any]] | None = None) -> None:
    """Call ``visit(block_name, block, replay)`` for each repeated block in order.

    ``replay()`` runs the block on the current calibration inputs (``visit`` hooks the block's
    layers around it, as often as it needs); after ``visit`` returns, the block is run once more
    to produce the next block's inputs. A model without repeated blocks is visited once as
    ``("", model)`` with a replay over the calibration batches themselves.
    """
    found = repeated_blocks(model)
    with torch.no_grad():
        if found is None:
            visit("", model, lambda: [call_model(model, no_cache(model, b)) for b in calib])
            return
        prefix, blocks = found
        states = capture_block_inputs(model, blocks[0], calib)
        items = list(enumerate(blocks))
        for i, block in (progress(items, "calibrating blocks") if progress else items):
            def replay(block: nn.Module = block) -> None:
                for args, kwargs in states:
                    block(*args, **kwargs)
            visit(f"{prefix}.{i}", block, replay)
            states = [next_block_inputs(block, args, kwargs) for args, kwargs in states]
