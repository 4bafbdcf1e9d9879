"""A user's own Hugging Face model directory (``config.json`` + safetensors), loaded offline.

The task comes from the config's ``architectures``: ``*ForCausalLM`` loads a causal LM,
``*ForSequenceClassification`` a classifier, anything else the bare encoder (``AutoModel``).
Weights must be safetensors (one file or shards with an index): a directory holding only
pickled ``pytorch_model.bin`` files is refused, because loading it would unpickle user files.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from torch import nn

from slimkit.core.errors import ConfigError
from slimkit.core.provenance import set_base

__all__ = ["is_hf_dir", "hf_task", "load_hf_dir", "local_tokenizer", "tokenizer_for_base"]

_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "tokenizer.model")


def is_hf_dir(path: str | Path) -> bool:
    """True when ``path`` is a directory with a ``config.json`` and no ``slimkit.json``."""
    p = Path(path)
    return p.is_dir() and (p / "config.json").is_file() and not (p / "slimkit.json").exists()


def _read_config(directory: Path) -> dict[str, Any]:
    try:
        config = json.loads((directory / "config.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{directory / 'config.json'} is not readable JSON: {exc}") from None
    if not isinstance(config, dict) or "model_type" not in config:
        raise ConfigError(f"{directory / 'config.json'} has no 'model_type': not a Hugging Face model config")
    return config


def hf_task(config: dict[str, Any]) -> str:
    """``causal-lm``, ``sequence-classification`` or ``base`` from the config's architectures."""
    archs = config.get("architectures") or []
    if any(a.endswith("ForCausalLM") for a in archs):
        return "causal-lm"
    if any(a.endswith("ForSequenceClassification") for a in archs):
        return "sequence-classification"
    return "base"


def _check_weights(directory: Path) -> None:
    if any(directory.glob("*.safetensors")):
        return
    pickles = sorted(p.name for p in directory.glob("*.bin"))
    if pickles:
        raise ConfigError(
            f"{directory} holds only pickled weights ({', '.join(pickles[:3])}); slimkit never unpickles "
            "user files. Convert once where you trust the file: "
            "`AutoModel.from_pretrained(dir).save_pretrained(new_dir, safe_serialization=True)`")
    raise ConfigError(f"{directory} has a config.json but no *.safetensors weights")


def _auto_class(task: str) -> Any:
    import transformers

    return {"causal-lm": transformers.AutoModelForCausalLM,
            "sequence-classification": transformers.AutoModelForSequenceClassification}.get(task, transformers.AutoModel)


def load_hf_dir(path: str | Path) -> tuple[nn.Module, Any]:
    """``(model, tokenizer or None)`` from a local Hugging Face directory, float32, eval mode, strict."""
    from slimkit.zoo.hf import check_loading_info, float32

    directory = Path(path).resolve()
    config = _read_config(directory)
    _check_weights(directory)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    model, info = _auto_class(hf_task(config)).from_pretrained(
        str(directory), local_files_only=True, output_loading_info=True, use_safetensors=True, **float32())
    check_loading_info(info, str(directory))
    model.eval()
    set_base(model, {"hf_dir": str(directory)})
    return model, local_tokenizer(directory)


def local_tokenizer(directory: Path) -> Any:
    if not any((directory / f).exists() for f in _TOKENIZER_FILES):
        return None
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(directory), local_files_only=True)


def tokenizer_for_base(base: dict[str, Any]) -> Any:
    """The tokenizer of a checkpoint's base model (its ``slimkit.json`` ``base`` record), when slimkit
    knows where it lives: a zoo model, or the user's Hugging Face directory if it still exists."""
    if "zoo" in base:
        from slimkit.zoo.models import load_tokenizer

        return load_tokenizer(base["zoo"])
    if "hf_dir" in base and Path(base["hf_dir"]).is_dir():
        return local_tokenizer(Path(base["hf_dir"]))
    return None
