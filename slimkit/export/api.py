"""``sk.export``: hand a compressed model to the runtime it deploys with (ONNX Runtime, llama.cpp, transformers).

Every format writes one directory, atomically and under slimkit's overwrite rules
(:mod:`slimkit.io.outputs`): built in a temporary directory beside ``out``, renamed into place
only when complete, and an existing ``out`` is replaced only with ``overwrite=True`` when slimkit
wrote it. The returned path is the artifact a runtime opens: ``out/model.onnx``, ``out/model.gguf``
or the ``out`` directory itself for ``hf``.

Exporters register themselves by format (``@register_exporter("onnx")``) in their own modules of
this package; this module only resolves the input, checks the output and dispatches.

>>> sk.export(res.model, "smollm2-onnx", format="onnx")               # doctest: +SKIP
>>> sk.export("smollm2-slim", "smollm2.gguf.d", format="gguf")        # doctest: +SKIP
"""
from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn

from slimkit.core.errors import ConfigError

__all__ = ["export", "register_exporter", "ExportOptions", "FORMATS", "resolve_model"]

#: format -> module of this package that registers its exporter on import
FORMATS: dict[str, str] = {"onnx": "slimkit.export.onnx", "gguf": "slimkit.export.gguf", "hf": "slimkit.export.hf"}

Exporter = Callable[[nn.Module, Path, "ExportOptions"], str]
_EXPORTERS: dict[str, Exporter] = {}


@dataclasses.dataclass
class ExportOptions:
    """What an exporter gets besides the model: the tokenizer (or None), example inputs, and flags."""

    tokenizer: Any = None
    example_inputs: Any = None
    dequantize: bool = False
    opset: int = 21
    #: MatMulNBits compute: 4 = int8 activations inside the kernel (fastest, what onnxruntime-genai ships), 0 = fp32
    accuracy_level: int = 4


def register_exporter(fmt: str) -> Callable[[Exporter], Exporter]:
    """Decorator: ``fn(model, tmp_dir, options) -> name of the main file inside tmp_dir ("" for the dir)``."""
    def decorate(fn: Exporter) -> Exporter:
        _EXPORTERS[fmt] = fn
        return fn
    return decorate


def _exporter(fmt: str) -> Exporter:
    if fmt not in FORMATS:
        raise ConfigError(f"format {fmt!r} is not an export format; valid: {sorted(FORMATS)}")
    if fmt not in _EXPORTERS:
        importlib.import_module(FORMATS[fmt])
    return _EXPORTERS[fmt]


def resolve_model(model_or_dir: nn.Module | str | Path, tokenizer: Any = None) -> tuple[nn.Module, Any]:
    """``(model, tokenizer)`` from a module, a saved slimkit checkpoint, or a local Hugging Face directory."""
    if isinstance(model_or_dir, nn.Module):
        return model_or_dir, tokenizer
    from slimkit import zoo
    from slimkit.io.checkpoint import load, read_manifest
    from slimkit.zoo.local import is_hf_dir, tokenizer_for_base

    path = Path(model_or_dir)
    if is_hf_dir(path):
        model, tok = zoo.load_model(str(path))
        return model, tokenizer if tokenizer is not None else tok
    model = load(path)
    if tokenizer is None:
        base = read_manifest(path).get("base", {})
        tokenizer = tokenizer_for_base(base)
    return model, tokenizer


def export(
    model_or_dir: nn.Module | str | Path,
    out: str | Path,
    *,
    format: str = "onnx",  # noqa: A002 - contract name
    example_inputs: Any = None,
    overwrite: bool = False,
    tokenizer: Any = None,
    dequantize: bool = False,
) -> Path:
    """Write ``model_or_dir`` (a model, a slimkit checkpoint or a Hugging Face directory) to ``out``
    in ``format`` (``onnx``, ``gguf`` or ``hf``); returns the path a runtime opens."""
    from slimkit.io.outputs import atomic_dir, check_replaceable

    fn = _exporter(format)
    target = Path(out)
    check_replaceable(target, overwrite, what="export directory")  # before any heavy work
    model, tok = resolve_model(model_or_dir, tokenizer)
    options = ExportOptions(tokenizer=tok, example_inputs=example_inputs, dequantize=dequantize)
    with atomic_dir(target, overwrite=overwrite, kind=f"export-{format}") as tmp:
        main = fn(model.eval(), tmp, options)
    return target / main if main else target
