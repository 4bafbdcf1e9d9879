"""Resolving a ``--model`` argument: ``zoo:NAME``, ``hf:ORG/NAME``, a saved slimkit directory or a
local Hugging Face directory (``config.json`` + safetensors)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from slimkit.core.errors import CheckpointError, ConfigError

__all__ = ["ModelRef", "parse_model_ref", "load_model_ref"]


class ModelRef:
    """A parsed model reference (checked before anything heavy is loaded)."""

    def __init__(self, kind: str, value: str) -> None:
        self.kind, self.value = kind, value

    @property
    def zoo_name(self) -> str | None:
        return self.value if self.kind == "zoo" else None

    def __str__(self) -> str:
        return f"{self.kind}:{self.value}"


def parse_model_ref(text: str) -> ModelRef:
    """Check the reference's form (and that a directory exists) without loading anything."""
    from slimkit import zoo

    if text.startswith("zoo:"):
        name = text[4:]
        if name not in zoo.model_names():
            raise ConfigError(f"--model {text!r}: unknown zoo model {name!r}; valid names are {zoo.model_names()}")
        return ModelRef("zoo", name)
    if text.startswith("hf:"):
        if "/" not in text[3:]:
            raise ConfigError(f"--model {text!r}: a hub id looks like hf:org/name")
        return ModelRef("hf", text[3:])
    path = Path(text)
    if not path.exists():
        raise CheckpointError(f"--model {text!r}: no such directory (use zoo:NAME, hf:ORG/NAME or a saved directory)")
    if path.is_file() and path.suffix == ".onnx":
        return ModelRef("onnx", str(path))
    if not path.is_dir():
        raise CheckpointError(f"--model {text!r} is a file; a saved slimkit checkpoint or a Hugging Face model is a "
                              "directory (an exported model is a .onnx file)")
    from slimkit.zoo.local import is_hf_dir

    if is_hf_dir(path):  # config.json + safetensors, no slimkit.json: the user's own model
        return ModelRef("hfdir", str(path))
    return ModelRef("dir", str(path))


def load_model_ref(ref: ModelRef) -> tuple[nn.Module, Any, str | None]:
    """Load the model; returns (model, tokenizer or None, zoo name of its base or None)."""
    from slimkit import zoo
    from slimkit.io.checkpoint import load, read_manifest
    from slimkit.zoo.local import tokenizer_for_base

    if ref.kind == "zoo":
        model, tok = zoo.load_model(ref.value)
        return model, tok, ref.value
    if ref.kind == "hf":
        model, tok = zoo.load_model(f"hf:{ref.value}")
        return model, tok, None
    if ref.kind == "onnx":
        return load_onnx(Path(ref.value))
    if ref.kind == "hfdir":
        model, tok = zoo.load_model(ref.value)
        return model, tok, None
    manifest = read_manifest(ref.value)
    base_zoo = manifest["base"].get("zoo")
    model = load(ref.value)
    tok = tokenizer_for_base(manifest["base"])
    return model, tok, base_zoo


def load_onnx(path: Path) -> tuple[nn.Module, Any, str | None]:
    """An exported ``.onnx`` run by ONNX Runtime, with the tokenizer exported beside it (if any).

    The returned model's ``slimkit_task`` says what its inputs are: ``image-classification`` for
    ``pixel_values``, else the causal-LM / encoder task from the ``config.json`` exported beside it.
    """
    from slimkit.export.ort_model import OrtModel
    from slimkit.zoo.local import hf_task, local_tokenizer

    model = OrtModel(path)
    config_file = path.parent / "config.json"
    if "pixel_values" in model.inputs:
        task = "image-classification"
    elif config_file.is_file():
        import json

        task = "causal-lm" if hf_task(json.loads(config_file.read_text(encoding="utf-8"))) == "causal-lm" else "embedding"
    else:
        raise CheckpointError(f"{path}: no config.json beside it, so its task is unknown (export it with sk.export)")
    object.__setattr__(model, "slimkit_task", task)
    return model, local_tokenizer(path.parent), None
