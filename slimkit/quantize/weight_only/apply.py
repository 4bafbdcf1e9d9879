"""Orchestration shared by the weight-only methods: which layers, swapping them in, the head.

* :func:`select_linears` picks the ``nn.Linear`` layers a step quantizes; the output head is left
  out unless ``lm_head: true`` and is then quantized separately by :func:`quantize_heads`; other
  weight layers (convolutions) are reported as skipped, or refused when targeted by name.
* :func:`install` swaps a quantized layer in and records the replayable edit.
"""
from __future__ import annotations

import resource
import sys

from torch import nn

from slimkit.core.context import RunContext
from slimkit.core.errors import ConfigError, UnsupportedModelError
from slimkit.core.select import matching_names, select_modules
from slimkit.core.swap import install_layer
from slimkit.quantize.weight_only.config import WeightOnlyConfig
from slimkit.quantize.weight_only.layer import WeightOnlyEmbedding, WeightOnlyLinear

__all__ = ["select_linears", "install", "quantize_heads", "head_name", "reset_peak_rss", "peak_rss_mb", "finish_notes"]

_UNSUPPORTED = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


def head_name(model: nn.Module) -> str | None:
    """Qualified name of the output head (``get_output_embeddings`` of a HF model), if any."""
    getter = getattr(model, "get_output_embeddings", None)
    head = getter() if callable(getter) else None
    if head is None:
        return None
    return next((n for n, m in model.named_modules() if m is head), None)


def select_linears(model: nn.Module, cfg: WeightOnlyConfig, ctx: RunContext, step: str) -> list[tuple[str, nn.Linear]]:
    """The Linear layers to quantize (head excluded); unsupported weight layers skipped or refused.

    Called first by every weight-only handler, so it also starts the step's peak-RSS window.
    """
    reset_peak_rss()
    _check_unsupported(model, cfg, ctx, step)
    head = head_name(model)
    chosen = []
    for name, layer in select_modules(model, (nn.Linear,), targets=cfg.targets, ignore=cfg.ignore, field=step):
        if name == head:
            if not cfg.lm_head:
                ctx.skip(name, "output head kept in float32 (set lm_head: true to quantize an untied copy)")
            continue
        chosen.append((name, layer))
    return chosen


def _check_unsupported(model: nn.Module, cfg: WeightOnlyConfig, ctx: RunContext, step: str) -> None:
    targeted = matching_names(model, cfg.targets, f"{step}.targets") if cfg.targets is not None else None
    dropped = matching_names(model, cfg.ignore, f"{step}.ignore") if cfg.ignore else set()
    for name, module in model.named_modules():
        if not isinstance(module, _UNSUPPORTED) or name in dropped:
            continue
        if targeted is not None and name in targeted:
            raise UnsupportedModelError(
                f"{step}: layer {name!r} is a {type(module).__name__}; weight-only {cfg.method} handles "
                f"nn.Linear (and embeddings) only")
        if targeted is None:
            ctx.skip(name, f"{type(module).__name__} is not handled by weight-only {cfg.method}")


def install(model: nn.Module, name: str, layer: nn.Module) -> None:
    """Put ``layer`` at ``name`` and record the ``replace_module`` edit that replays it."""
    install_layer(model, name, layer)


def quantize_heads(model: nn.Module, cfg: WeightOnlyConfig, ctx: RunContext) -> None:
    """Round-to-nearest ``head_bits`` for the output head / input embeddings when asked, else report them."""
    head = head_name(model)
    inputs = getattr(model, "get_input_embeddings", lambda: None)()
    emb = next((n for n, m in model.named_modules() if m is inputs), None) if inputs is not None else None
    tied = head is not None and inputs is not None and model.get_submodule(head).weight is inputs.weight
    if cfg.embeddings and tied and not cfg.lm_head:
        raise ConfigError("embeddings: true on a model whose lm_head is tied to the embeddings needs lm_head: true "
                          "too (otherwise the head keeps a float32 copy and nothing is saved)")
    gs = cfg.group_size
    if head is not None and cfg.lm_head:
        lin = model.get_submodule(head)
        install(model, head, WeightOnlyLinear.from_weight(lin.weight.detach(), lin.bias, cfg.head_bits, gs,
                                                          cfg.symmetric, cfg.runtime))
    if emb is not None:
        if cfg.embeddings:
            install(model, emb, WeightOnlyEmbedding.from_embedding(inputs, cfg.head_bits, gs, cfg.symmetric))
        else:
            ctx.skip(emb, "input embeddings kept in float32 (set embeddings: true to store them at head_bits)")


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS counter (Linux ``clear_refs`` 5), so a step reports its own peak."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float:
    """Peak resident memory in MiB since the last :func:`reset_peak_rss` (Linux ``VmHWM``), else
    since process start (``ru_maxrss``)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024, 1)


def finish_notes(model: nn.Module, ctx: RunContext, count: int) -> None:
    """Common notes: layers quantized, runtime of the swapped layers, peak RSS."""
    ctx.note("quantized_linear_layers", count)
    runtimes = sorted({m.slimkit_runtime for m in model.modules() if isinstance(m, WeightOnlyLinear)})
    ctx.note("runtime", "; ".join(runtimes))
    ctx.note("peak_rss_mb", peak_rss_mb())
