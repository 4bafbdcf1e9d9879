"""Hugging Face (transformers) loading for the zoo: strict, offline local loads and ``hf:`` hub ids.

Local zoo directories are always loaded with ``local_files_only=True``, so nothing tries the
network. (``HF_HUB_OFFLINE`` is deliberately not set from here: huggingface_hub reads it once at
import time, so setting it around a call would either do nothing or, if it triggered the first
import, switch the hub off for the whole process, breaking later ``hf:`` loads.)

"Strict" means the load reports no missing, unexpected or shape-mismatched keys; transformers
only logs those, so they are checked here and turned into :class:`SlimkitError`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from slimkit.core.errors import ConfigError, SlimkitError
from slimkit.zoo.hf_configs import HF_AUTO_CLASS, HF_CONFIGS

__all__ = [
    "float32",
    "check_loading_info",
    "load_local",
    "build_from_config",
    "load_hub",
    "build_hub",
    "parse_hub_id",
]

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")


def float32() -> dict[str, Any]:
    """``from_pretrained`` keyword for float32 weights (``dtype`` since transformers 4.56)."""
    import transformers

    major, minor = (int(p) for p in transformers.__version__.split(".")[:2])
    return {"dtype" if (major, minor) >= (4, 56) else "torch_dtype": torch.float32}


def _auto_class(kind: str) -> Any:
    import transformers

    return transformers.AutoModelForCausalLM if kind == "causal-lm" else transformers.AutoModel


def load_local(directory: Path, kind: str, what: str) -> tuple[nn.Module, Any]:
    """Load model (float32) and tokenizer from a local directory, offline and strictly."""
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # slimkit shows its own progress; a per-tensor bar is noise
    model, info = _auto_class(kind).from_pretrained(
        str(directory), local_files_only=True, output_loading_info=True, **float32()
    )
    tokenizer = AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
    check_loading_info(info, what)
    return model, tokenizer


def check_loading_info(info: dict[str, Any], what: str) -> None:
    """Raise if transformers reported missing, unexpected or mismatched weights."""
    problems = {k: list(info.get(k) or []) for k in ("missing_keys", "unexpected_keys", "mismatched_keys")}
    problems = {k: v for k, v in problems.items() if v}
    if problems:
        detail = "; ".join(f"{k}: {v[:5]}{' ...' if len(v) > 5 else ''}" for k, v in problems.items())
        raise SlimkitError(f"loading {what} was not strict ({detail}); the package files may be corrupt")


def build_from_config(name: str) -> nn.Module:
    """Randomly initialised architecture of the Hugging Face zoo model ``name`` (no weights)."""
    from transformers import AutoConfig

    cfg = dict(HF_CONFIGS[name])
    config = AutoConfig.for_model(cfg.pop("model_type"), **cfg)
    return _auto_class(HF_AUTO_CLASS[name]).from_config(config)  # float32: torch's default dtype


def parse_hub_id(name: str) -> str:
    """``"hf:org/name"`` -> ``"org/name"``; :class:`ConfigError` if malformed."""
    repo = name[3:] if name.startswith("hf:") else name
    if not _HUB_ID.match(repo):
        raise ConfigError(f"invalid Hugging Face model reference {name!r}; expected 'hf:org/name'")
    return repo


def _hub_kind(config: Any) -> str:
    """``causal-lm`` when the hub config names a ``*ForCausalLM`` architecture, else ``base``."""
    archs = getattr(config, "architectures", None) or []
    return "causal-lm" if any(a.endswith("ForCausalLM") for a in archs) else "base"


def load_hub(repo: str) -> tuple[nn.Module, Any]:
    """Load a hub model (causal LM if its config says so, else ``AutoModel``) and its tokenizer
    (``None`` if it has none); every failure becomes :class:`SlimkitError`."""
    try:
        from transformers import AutoConfig, AutoTokenizer

        config = AutoConfig.from_pretrained(repo)
        model, info = _auto_class(_hub_kind(config)).from_pretrained(
            repo, output_loading_info=True, **float32()
        )
    except Exception as exc:  # network, auth, missing repo, unknown architecture, ...
        raise SlimkitError(
            f"could not load Hugging Face model {repo!r}: {type(exc).__name__}: {exc}"
        ) from exc
    check_loading_info(info, f"hf:{repo}")
    try:
        tokenizer = AutoTokenizer.from_pretrained(repo)
    except Exception:  # vision/audio models have no tokenizer
        tokenizer = None
    return model, tokenizer


def build_hub(repo: str) -> nn.Module:
    """Random-init architecture from a hub config; failures become :class:`SlimkitError`."""
    try:
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(repo)
        return _auto_class(_hub_kind(config)).from_config(config)
    except Exception as exc:
        raise SlimkitError(
            f"could not build Hugging Face model {repo!r}: {type(exc).__name__}: {exc}"
        ) from exc
