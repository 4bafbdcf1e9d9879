"""Orchestration shared by the weight-only methods: which layers, swapping them in, the head.

* :func:`select_linears` picks the ``nn.Linear`` layers a step quantizes; the output head is left
  out of them and handled by :func:`quantize_heads`, with the input embeddings: both are stored at
  ``head_bits`` (int8 by default, NNCF's convention for int4 weight compression) unless the config
  keeps them float; other weight layers (convolutions) are reported as skipped, or refused when
  targeted by name.
* :func:`install` swaps a quantized layer in and records the replayable edit.
* :func:`finish_notes` reports, per layer (folded over block indices), the precision each kept.
"""
from __future__ import annotations

import resource
import sys

from torch import nn

from slimkit.core.context import RunContext
from slimkit.core.errors import ConfigError, UnsupportedModelError
from slimkit.core.heads import embedding_names, names_explicitly, output_head_names
from slimkit.core.layer_notes import layer_summary
from slimkit.core.per_layer import resolve_and_note
from slimkit.core.swap import custom_forward
from slimkit.core.select import matching_names, select_modules
from slimkit.core.swap import install_layer
from slimkit.quantize.weight_only.config import WeightOnlyConfig
from slimkit.quantize.weight_only.layer import WeightOnlyEmbedding, WeightOnlyLinear

__all__ = ["select_linears", "layer_bits", "install", "quantize_heads", "heads_to_quantize", "head_name",
           "head_and_embedding_names",
           "reset_peak_rss", "peak_rss_mb", "finish_notes"]

_UNSUPPORTED = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


def head_name(model: nn.Module) -> str | None:
    """Qualified name of the output head Linear (``get_output_embeddings``, ``lm_head``, or a
    Linear tied to an embedding), if any."""
    heads = head_and_embedding_names(model)[0]
    return heads[0] if heads else None


def head_and_embedding_names(model: nn.Module) -> tuple[list[str], list[str]]:
    """``(output head Linears, embeddings)`` that weight-only quantization stores at ``head_bits``.

    The embeddings are the input embeddings (``get_input_embeddings``) and any ``nn.Embedding``
    whose weight a head shares; smaller tables (positions, token types) are left as they are.
    """
    heads = sorted(n for n in output_head_names(model) if isinstance(model.get_submodule(n), nn.Linear))
    head_weights = {id(model.get_submodule(n).weight) for n in heads}
    getter = getattr(model, "get_input_embeddings", None)
    try:
        inputs = getter() if callable(getter) else None
    except NotImplementedError:
        inputs = None
    embs = sorted(n for n, m in model.named_modules() if n in embedding_names(model)
                  and (m is inputs or id(m.weight) in head_weights))
    return heads, embs


def select_linears(model: nn.Module, cfg: WeightOnlyConfig, ctx: RunContext, step: str) -> list[tuple[str, nn.Linear]]:
    """The Linear layers to quantize at ``bits`` (the output head is :func:`quantize_heads`' job);
    unsupported weight layers skipped or refused.

    Called first by every weight-only handler, so it also starts the step's peak-RSS window.
    """
    reset_peak_rss()
    _check_unsupported(model, cfg, ctx, step)
    heads = set(head_and_embedding_names(model)[0])
    chosen = []
    for name, layer in select_modules(model, (nn.Linear,), targets=cfg.targets, ignore=cfg.ignore, field=step):
        why = custom_forward(layer)
        if why is not None:
            ctx.skip(name, why)
        elif name not in heads:
            chosen.append((name, layer))
    return chosen


def layer_bits(cfg: WeightOnlyConfig, layers: list[tuple[str, nn.Module]], ctx: RunContext) -> dict[str, int]:
    """The bit width of every selected Linear: ``bits`` (one number, or a per-layer map resolved by
    :func:`slimkit.core.per_layer.resolve_per_layer`)."""
    return {n: int(b) for n, b in resolve_and_note("quantize.bits", cfg.bits, [n for n, _ in layers], ctx).items()}


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


def _wanted(model: nn.Module, cfg: WeightOnlyConfig, name: str, flag: bool | None) -> tuple[bool, str]:
    """Whether the head / embedding ``name`` is quantized, and if not, why (for the report)."""
    if flag is not None:
        return flag, "" if flag else "false"
    if cfg.ignore and name in matching_names(model, cfg.ignore, "quantize.ignore"):
        return False, "covered by ignore"
    if cfg.targets is not None and not names_explicitly(cfg.targets, name):
        return False, "not named in targets"
    return True, ""


def _bits_label(layer: nn.Module) -> str:
    return f"int{layer.bits} " + (f"g{layer.group_size}" if layer.group_size is not None else "per-channel")


def heads_to_quantize(model: nn.Module, cfg: WeightOnlyConfig) -> list[str]:
    """The output heads ``cfg`` stores at ``head_bits`` (the others stay float32)."""
    return [n for n in head_and_embedding_names(model)[0] if _wanted(model, cfg, n, cfg.lm_head)[0]]


def quantize_heads(model: nn.Module, cfg: WeightOnlyConfig, ctx: RunContext,
                   calibrated: dict[str, nn.Module] | None = None) -> None:
    """Store the output head and the input embeddings at ``head_bits`` (round-to-nearest, or the
    ``calibrated`` layer given for a head, e.g. GPTQ's) unless the config keeps them float
    (``lm_head`` / ``embeddings`` false, or not covered by the selection).

    A tied head and embedding stay one table: the embedding reads the quantized head's packed
    codes (:meth:`WeightOnlyEmbedding.sharing`), stored once; a calibrated head's codes are fitted
    to the head's outputs, not to the rows the embedding looks up, so its embedding gets its own
    round-to-nearest table instead. An embedding quantized while its
    tied head stays float32 would save nothing, so that combination is refused (explicit
    ``embeddings: true``) or the embedding stays float32 too (the default).
    """
    heads, embs = head_and_embedding_names(model)
    bits = cfg.resolved_head_bits()
    float_heads = set()  # ids of the weights of heads that stay float32
    quantized_heads: dict[int, WeightOnlyLinear] = {}  # id of a head's float weight -> its int layer
    for name in heads:
        lin = model.get_submodule(name)
        ok, why = _wanted(model, cfg, name, cfg.lm_head)
        if not ok:
            float_heads.add(id(lin.weight))
            ctx.skip(name, f"output head kept in float32 (lm_head: {why}); lm_head: true stores it at head_bits")
            continue
        if calibrated and name in calibrated:
            install(model, name, calibrated[name])
            continue
        layer = WeightOnlyLinear.from_weight(lin.weight.detach(), lin.bias, bits, cfg.group_size, cfg.symmetric,
                                             cfg.runtime)
        quantized_heads[id(lin.weight)] = layer
        install(model, name, layer)
    for name in embs:
        emb = model.get_submodule(name)
        ok, why = _wanted(model, cfg, name, cfg.embeddings)
        if ok and id(emb.weight) in float_heads:
            if cfg.embeddings:
                raise ConfigError("embeddings: true on a model whose lm_head is tied to the embeddings needs the "
                                  "head quantized too (lm_head: true); otherwise the head keeps a float32 copy and "
                                  "nothing is saved")
            ok, why = False, "tied to the output head, which stays float32"
        if not ok:
            ctx.skip(name, f"input embeddings kept in float32 (embeddings: {why}); embeddings: true stores them "
                           "at head_bits")
            continue
        head = quantized_heads.get(id(emb.weight))
        install(model, name, WeightOnlyEmbedding.sharing(head) if head is not None else
                WeightOnlyEmbedding.from_embedding(emb, bits, cfg.group_size, cfg.symmetric))


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
    """Common notes: layers quantized, runtime of the swapped layers, peak RSS, and
    ``layer_precision``: each weight-only layer's bits and group (folded over block indices), the
    output head / embeddings marked, those kept float32 listed as ``fp32``."""
    ctx.note("quantized_linear_layers", count)
    runtimes = sorted({m.slimkit_runtime for m in model.modules() if isinstance(m, WeightOnlyLinear)})
    ctx.note("runtime", "; ".join(runtimes))
    ctx.note("peak_rss_mb", peak_rss_mb())
    ctx.note("layer_precision", layer_summary(_precisions(model)))


def _precisions(model: nn.Module) -> dict[str, str | float]:
    heads = output_head_names(model)
    labels: dict[str, str | float] = {}
    for name, module in model.named_modules():
        if isinstance(module, WeightOnlyEmbedding):
            labels[name] = f"{_bits_label(module)} (embedding)"
        elif isinstance(module, WeightOnlyLinear):
            labels[name] = _bits_label(module) + (" (output head)" if name in heads else "")
    for name in sorted(heads | set(head_and_embedding_names(model)[1])):
        labels.setdefault(name, "fp32")
    return labels
