"""``sk.save`` / ``sk.load``: a directory with ``model.safetensors`` and ``slimkit.json``.

Writing is atomic: everything goes into a hidden temporary directory beside the target, which is
renamed into place only when complete, and removed on any failure (Ctrl-C included); an existing
directory is replaced only if slimkit wrote it (:mod:`slimkit.io.outputs`). Loading never
unpickles: tensors come only from safetensors, which stores raw bytes plus a JSON header.
"""
from __future__ import annotations

import json
import struct
import time
from pathlib import Path
from collections.abc import Callable
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from slimkit.core import provenance
from slimkit.core.errors import CheckpointError
from slimkit.io.edits import replay_edits
from slimkit.io.encodings import decode_tensor, encode_tensor
from slimkit.io.outputs import atomic_dir, check_replaceable

__all__ = ["save", "load", "read_manifest", "read_tensors", "FORMAT_VERSION", "TENSOR_FILE", "MANIFEST_FILE",
           "INDEX_FILE", "atomic_dir"]

FORMAT_VERSION = 1
TENSOR_FILE = "model.safetensors"
MANIFEST_FILE = "slimkit.json"
#: sharded checkpoints (``sk.compress_stream``): ``{"weight_map": {tensor: shard file}}`` in place of TENSOR_FILE
INDEX_FILE = "model.safetensors.index.json"


# ----------------------------------------------------------------------------- saving
def save(
    model: nn.Module,
    out_dir: str | Path,
    *,
    overwrite: bool = False,
    report: dict[str, Any] | None = None,
    extra: Callable[[Path], None] | None = None,
) -> Path:
    """Write ``model`` to ``out_dir`` atomically; returns the directory path.

    Refuses an existing ``out_dir`` unless ``overwrite=True`` and it is a directory slimkit wrote
    holding only slimkit's files (:func:`slimkit.io.outputs.check_replaceable`); never writes over
    the directory the model was loaded from. ``extra(tmp_dir)`` may write more files (e.g. report files) into the
    directory before it is renamed into place, so they share its atomicity.
    """
    out = Path(out_dir).resolve()
    _check_target(model, out, overwrite)
    tensors, encodings, aliases = _encode_state(model)
    manifest = _manifest(model, encodings, aliases, report)
    with atomic_dir(out, overwrite=overwrite, kind="checkpoint") as tmp:
        save_file(tensors, str(tmp / TENSOR_FILE), metadata={"format": "slimkit"})
        (tmp / MANIFEST_FILE).write_text(json.dumps(manifest, indent=1, default=str), encoding="utf-8")
        if extra is not None:
            extra(tmp)
    return out


def _check_target(model: nn.Module, out: Path, overwrite: bool) -> None:
    source = provenance.get_source(model)
    if source is not None:
        src = Path(source).resolve()
        if out == src or out in src.parents:
            raise CheckpointError(f"refusing to write {out}: it holds {src}, the checkpoint this model was loaded from")
    check_replaceable(out, overwrite)


def _encode_state(model: nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, str]]:
    """Encode the state dict; tied tensors (same storage) are written once, the rest alias it."""
    tensors: dict[str, torch.Tensor] = {}
    encodings: dict[str, Any] = {}
    aliases: dict[str, str] = {}
    seen: dict[tuple[int, int, tuple[int, ...]], str] = {}
    for name, t in model.state_dict().items():
        if not isinstance(t, torch.Tensor):
            raise CheckpointError(f"state entry {name!r} is a {type(t).__name__}, not a tensor; cannot store it safely")
        key = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape))
        if t.numel() > 0 and key in seen:
            aliases[name] = seen[key]
            continue
        seen[key] = name
        parts, record = encode_tensor(name, t)
        tensors.update(parts)
        encodings[name] = record
    return tensors, encodings, aliases


def _manifest(model: nn.Module, encodings: dict[str, Any], aliases: dict[str, str],
              report: dict[str, Any] | None) -> dict[str, Any]:
    from slimkit import __version__

    return {
        "format": "slimkit",
        "format_version": FORMAT_VERSION,
        "slimkit_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "base": _base_reference(model),
        "recipe": provenance.get_recipe(model),
        "edits": provenance.get_edits(model),
        "encodings": encodings,
        "aliases": aliases,
        "report": report,
    }


def _base_reference(model: nn.Module) -> dict[str, Any]:
    """What rebuilds the original architecture: the zoo name and, for HF models, class + config."""
    ref = dict(provenance.get_base(model) or {})
    config = getattr(model, "config", None)
    if config is not None and hasattr(config, "to_json_string"):
        ref["hf_class"] = type(model).__name__
        ref["hf_config"] = json.loads(config.to_json_string(use_diff=False))
        for edit in reversed(provenance.get_edits(model)):  # fields an edit changed: the base had the old value
            ref["hf_config"].update(edit.get("hf_config_before", {}))
    if not ref:
        ref["class"] = f"{type(model).__module__}.{type(model).__qualname__}"
    return ref


# ----------------------------------------------------------------------------- loading
def read_manifest(ckpt_dir: str | Path) -> dict[str, Any]:
    """The parsed ``slimkit.json`` of a checkpoint directory.

    Raises :class:`CheckpointError` naming the file (and the key) when it is missing, not JSON, not
    a slimkit manifest, from a newer format, or lacks a key loading needs (or has it of the wrong type).
    """
    d = Path(ckpt_dir)
    if not d.is_dir():
        raise CheckpointError(f"checkpoint directory {str(d)!r} does not exist")
    path = d / MANIFEST_FILE
    if not path.is_file():
        raise CheckpointError(f"{d} is not a slimkit checkpoint: {MANIFEST_FILE} is missing")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != "slimkit":
        raise CheckpointError(f"{path} is not a slimkit manifest (no \"format\": \"slimkit\")")
    _check_manifest_keys(manifest, path)
    if manifest["format_version"] > FORMAT_VERSION:
        raise CheckpointError(f"{path} has format version {manifest['format_version']}; this slimkit reads up to {FORMAT_VERSION}")
    return manifest


#: keys of slimkit.json that loading reads: (type, required)
_MANIFEST_KEYS: dict[str, tuple[type | tuple[type, ...], bool]] = {
    "format_version": (int, True), "base": (dict, True), "encodings": (dict, True),
    "edits": (list, False), "aliases": (dict, False), "recipe": ((dict, type(None)), False),
}


def _check_manifest_keys(manifest: dict[str, Any], path: Path) -> None:
    for key, (kind, required) in _MANIFEST_KEYS.items():
        if key not in manifest:
            if required:
                raise CheckpointError(f"{path} is malformed: key {key!r} is missing")
            continue
        value = manifest[key]
        if not isinstance(value, kind) or isinstance(value, bool):
            raise CheckpointError(f"{path} is malformed: key {key!r} is a {type(value).__name__}, "
                                  f"expected {getattr(kind, '__name__', 'object or null')}")
    for name, record in manifest["encodings"].items():
        if not isinstance(record, dict):
            raise CheckpointError(f"{path} is malformed: encodings[{name!r}] is a {type(record).__name__}, expected an object")


def load(ckpt_dir: str | Path, *, model: nn.Module | None = None, lazy: bool = False) -> nn.Module:
    """Rebuild the architecture (or use ``model``), replay structural edits, load the tensors.

    ``lazy=True`` builds the base architecture without allocating its weights (meta device) and
    puts the checkpoint's tensors in place (``assign``), so a large checkpoint (e.g. from
    ``sk.compress_stream``) is held in memory once, not twice.
    """
    d = Path(ckpt_dir)
    manifest = read_manifest(d)
    raw = _read_checkpoint_tensors(d)
    net = model if model is not None else _rebuild_base(manifest["base"], d / MANIFEST_FILE, lazy)
    replay_edits(net, manifest.get("edits", []))
    state = _decode_state(manifest, raw, d / MANIFEST_FILE)
    del raw
    _load_state(net, state, assign=lazy)
    _share_aliased_buffers(net, manifest.get("aliases", {}))
    provenance.set_base(net, manifest["base"])
    for edit in manifest.get("edits", []):
        provenance.record_edit(net, edit)
    if manifest.get("recipe") is not None:
        provenance.set_recipe(net, manifest["recipe"])
    provenance.set_source(net, str(d.resolve()))
    return net.eval()


def _read_checkpoint_tensors(d: Path) -> dict[str, torch.Tensor]:
    """``model.safetensors``, or every shard named by ``model.safetensors.index.json``."""
    index = d / INDEX_FILE
    if (d / TENSOR_FILE).exists() or not index.is_file():
        return read_tensors(d / TENSOR_FILE)
    try:
        files = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CheckpointError(f"{index} is malformed: {exc}") from None
    raw: dict[str, torch.Tensor] = {}
    for name in files:
        if not isinstance(name, str) or Path(name).name != name:
            raise CheckpointError(f"{index} names {name!r}, not a file in {d}")
        raw.update(read_tensors(d / name))
    return raw


def _decode_state(manifest: dict[str, Any], raw: dict[str, torch.Tensor], path: Path) -> dict[str, torch.Tensor]:
    """Decode every tensor record; a record that names a missing key or tensor is a CheckpointError."""
    state: dict[str, torch.Tensor] = {}
    for name, record in manifest["encodings"].items():
        try:
            state[name] = decode_tensor(name, record, raw)
        except (CheckpointError, KeyError, TypeError, ValueError, IndexError, RuntimeError) as exc:
            why = str(exc) if isinstance(exc, CheckpointError) else f"{type(exc).__name__}: {exc}"
            raise CheckpointError(f"{path}: encodings[{name!r}] cannot be decoded ({why})") from None
    for alias, canonical in manifest.get("aliases", {}).items():
        if canonical not in state:
            raise CheckpointError(f"{path} is malformed: aliases[{alias!r}] names {canonical!r}, which is not stored")
        state[alias] = state[canonical]
    return state


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    """Read safetensors after checking the header, so a pickle or truncated file fails clearly."""
    if not path.is_file():
        raise CheckpointError(f"{path} is missing")
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(9)
    if len(head) < 9:
        raise CheckpointError(f"{path} is truncated ({size} bytes)")
    # safetensors = 8-byte little-endian header length, then a JSON header starting with "{".
    # (The first bytes alone say nothing: they are the low bytes of the header length.)
    (header_len,) = struct.unpack("<Q", head[:8])
    if head[8:9] != b"{" or header_len <= 1 or 8 + header_len > size:
        if head[:2] == b"PK" or head[:1] == b"\x80":
            raise CheckpointError(f"{path} looks like a pickle/zip file, not safetensors; refusing to load it")
        raise CheckpointError(f"{path} is not a valid safetensors file (header length {header_len}, file {size} bytes)")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path} is corrupt or truncated: {exc}") from None


def _rebuild_base(base: dict[str, Any], path: Path, lazy: bool = False) -> nn.Module:
    """The original architecture from the manifest's ``base`` record (``path`` names the manifest in errors)."""
    if "hf_class" in base:
        return _rebuild_hf(base, path, lazy)
    if "zoo" in base:
        from slimkit import zoo

        return zoo.build_model(base["zoo"])
    raise CheckpointError(
        f"this checkpoint was made from a user model ({base.get('class', '?')}) that slimkit cannot rebuild; "
        "pass a fresh instance: sk.load(dir, model=MyNet())"
    )


def _rebuild_hf(base: dict[str, Any], path: Path, lazy: bool = False) -> nn.Module:
    import transformers

    name = base["hf_class"]
    cls = getattr(transformers, name, None) if isinstance(name, str) else None
    if not (isinstance(cls, type) and issubclass(cls, transformers.PreTrainedModel)):
        raise CheckpointError(f"{path}: base.hf_class = {name!r} is not a transformers model class "
                              f"(transformers {transformers.__version__})")
    config = base.get("hf_config")
    if not isinstance(config, dict):
        raise CheckpointError(f"{path} is malformed: base.hf_config is "
                              f"{'missing' if config is None else 'a ' + type(config).__name__}, expected an object")
    try:
        if not lazy:
            return cls(cls.config_class.from_dict(config))
        from accelerate import init_empty_weights

        with init_empty_weights(include_buffers=False):  # parameters on meta; rotary buffers computed
            return cls(cls.config_class.from_dict(config))
    except (TypeError, ValueError, KeyError, AttributeError) as exc:
        raise CheckpointError(f"{path}: base.hf_config does not build a {name}: {exc}") from None


def _load_state(net: nn.Module, state: dict[str, torch.Tensor], assign: bool = False) -> None:
    shared = _shared_parameters(net) if assign else []
    try:
        result = net.load_state_dict(state, strict=True, assign=assign)
    except RuntimeError as exc:
        raise CheckpointError(f"checkpoint tensors do not fit the rebuilt model: {str(exc)[:500]}") from None
    if result.missing_keys or result.unexpected_keys:  # pragma: no cover - strict raises first
        raise CheckpointError(f"missing {result.missing_keys}, unexpected {result.unexpected_keys}")
    for group in shared:  # assign gives each name its own Parameter: tie them again
        first = getattr(group[0][0], group[0][1])
        for module, leaf in group[1:]:
            module._parameters[leaf] = first


def _share_aliased_buffers(net: nn.Module, aliases: dict[str, str]) -> None:
    """Point each aliased buffer at its canonical buffer again, as it was when saved (e.g. a tied
    embedding that reads its quantized lm_head's packed codes), so memory holds one copy and a
    re-save writes one copy. Aliased parameters are tied by the model itself."""
    buffers = dict(net.named_buffers(remove_duplicate=False))
    for alias, canonical in aliases.items():
        if alias in buffers and canonical in buffers:
            owner, _, leaf = alias.rpartition(".")
            net.get_submodule(owner).register_buffer(leaf, buffers[canonical])


def _shared_parameters(net: nn.Module) -> list[list[tuple[nn.Module, str]]]:
    """Groups of (module, name) holding the same Parameter object (a tied head and embedding)."""
    owners: dict[int, list[tuple[nn.Module, str]]] = {}
    for module in net.modules():
        for leaf, p in module._parameters.items():
            if p is not None:
                owners.setdefault(id(p), []).append((module, leaf))
    return [g for g in owners.values() if len(g) > 1]
