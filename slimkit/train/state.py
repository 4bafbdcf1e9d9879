"""Training state on disk, for resuming a killed run: model + optimizer tensors in safetensors,
step / scheduler / hyper-parameters / RNG bookkeeping in JSON. Never pickle.

Each save writes a new ``step-NNNNNNNN`` directory atomically (temp dir + rename, see
:class:`slimkit.io.outputs.atomic_dir`), then deletes the older ones, so at any instant the
newest complete directory is a consistent state: a kill loses at most one checkpoint interval.
Only ``step-*`` directories slimkit wrote (they carry its marker and nothing else) are ever
replaced or deleted: anything else in ``checkpoint_dir`` is left alone. A state that cannot be
read back (truncated, garbage, keys missing) is a :class:`CheckpointError` naming the file.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn

from slimkit.core.errors import CheckpointError
from slimkit.io.checkpoint import read_tensors
from slimkit.io.outputs import atomic_dir, is_slimkit_output, remove_output

__all__ = ["TrainState", "save_train_state", "load_latest_train_state", "run_fingerprint"]

_TENSORS = "train_state.safetensors"
_META = "train_state.json"
_PREFIX = "step-"


class TrainState(dict):
    """What a resume needs: ``step``, ``micro`` (batches consumed), ``history``, ``best_metric``,
    ``bad_evals`` and ``fingerprint`` (plain values); restored into model/optimizer/scheduler by
    :func:`load_latest_train_state`."""


def run_fingerprint(model: nn.Module, total_steps: int, n_batches: int) -> str:
    """Identifies a run (parameter names/shapes, step budget, data size): refuse foreign state."""
    h = hashlib.sha256()
    for name, p in model.state_dict().items():
        h.update(f"{name}:{tuple(p.shape)}:{p.dtype};".encode())
    h.update(f"{total_steps}:{n_batches}".encode())
    return h.hexdigest()[:16]


def _optimizer_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    plain: dict[str, Any] = {}
    for idx, entry in sd["state"].items():
        for key, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{idx}.{key}"] = value.detach().cpu().contiguous().clone()
            else:
                plain[f"{idx}.{key}"] = value
    return tensors, {"param_groups": sd["param_groups"], "plain": plain}


def save_train_state(directory: str | Path, state: dict[str, Any], model: nn.Module,
                     optimizer: torch.optim.Optimizer, scheduler: Any, params: list[nn.Parameter]) -> Path:
    """Write one consistent checkpoint of a training run; returns its directory."""
    root = Path(directory)
    target = root / f"{_PREFIX}{int(state['step']):08d}"
    tensors = {f"model.{k}": v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    # parameters optimised but not part of the model (e.g. distillation projections)
    owned = {id(p) for p in model.parameters()}
    for i, p in enumerate(params):
        if id(p) not in owned:
            tensors[f"extra.{i}"] = p.detach().cpu().contiguous().clone()
    opt_tensors, opt_meta = _optimizer_tensors(optimizer)
    tensors.update(opt_tensors)
    tensors["rng.torch"] = torch.get_rng_state()
    meta = dict(state, optimizer=opt_meta, scheduler=scheduler.state_dict() if scheduler is not None else None)
    # a state of the same step (a resumed run saving again) is replaced only if slimkit wrote it
    with atomic_dir(target, overwrite=True, kind="train-state") as tmp:
        save_file(tensors, str(tmp / _TENSORS))
        (tmp / _META).write_text(json.dumps(meta, default=_jsonable))
    for old in root.glob(f"{_PREFIX}*"):
        if old != target and is_slimkit_output(old):  # never a step-* folder slimkit did not write
            remove_output(old)
    return target


def _jsonable(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, tuple):
        return list(value)
    raise TypeError(f"cannot store {type(value).__name__} in the training state")


def _latest(root: Path) -> Path | None:
    done = sorted(p for p in root.glob(f"{_PREFIX}*") if (p / _META).exists() and (p / _TENSORS).exists())
    return done[-1] if done else None


def load_latest_train_state(directory: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer,
                            scheduler: Any, params: list[nn.Parameter], fingerprint: str) -> TrainState | None:
    """Restore the newest complete state under ``directory`` into the given objects, or ``None``.

    Raises :class:`CheckpointError` when the state belongs to a different run (model or budget), or
    when it cannot be read back (garbage or truncated files, missing keys or tensors), naming it.
    """
    root = Path(directory)
    latest = _latest(root) if root.exists() else None
    if latest is None:
        return None
    meta = _read_meta(latest / _META)
    if meta.get("fingerprint") != fingerprint:
        raise CheckpointError(f"checkpoint_dir {root} holds the state of a different run (other model, data "
                              f"size or step budget); use a new checkpoint_dir or delete {latest}")
    tensors = read_tensors(latest / _TENSORS)
    try:
        _restore(tensors, meta, model, optimizer, scheduler, params)
    except (KeyError, ValueError, TypeError, IndexError, RuntimeError) as exc:
        lines = str(exc).splitlines()
        why = f"entry {exc.args[0]!r} is missing" if isinstance(exc, KeyError) and exc.args else \
            f"{type(exc).__name__}: {lines[0] if lines else ''}"
        raise CheckpointError(f"training state {latest} is corrupt or incomplete ({why}); "
                              f"delete {latest} to start over") from None
    drop = {"optimizer", "scheduler"}
    return TrainState({k: v for k, v in meta.items() if k not in drop})


#: keys of train_state.json a resume reads
_META_KEYS = ("step", "fingerprint", "optimizer")


def _read_meta(path: Path) -> dict[str, Any]:
    """The parsed ``train_state.json``; garbage, truncation or a missing key is a CheckpointError naming it."""
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"training state file {path} is not valid JSON ({exc}); "
                              f"delete {path.parent} to start over") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"training state file {path} is a JSON {type(meta).__name__}, expected an object")
    for key in _META_KEYS:
        if key not in meta:
            raise CheckpointError(f"training state file {path} is malformed: key {key!r} is missing")
    return meta


def _restore(tensors: dict[str, torch.Tensor], meta: dict[str, Any], model: nn.Module,
             optimizer: torch.optim.Optimizer, scheduler: Any, params: list[nn.Parameter]) -> None:
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")}, strict=True)
    owned = {id(p) for p in model.parameters()}
    with torch.no_grad():
        for i, p in enumerate(params):
            if id(p) not in owned:
                p.copy_(tensors[f"extra.{i}"])
    optimizer.load_state_dict(_optimizer_state(meta["optimizer"], tensors))
    if scheduler is not None and meta.get("scheduler") is not None:
        scheduler.load_state_dict(meta["scheduler"])
    torch.set_rng_state(tensors["rng.torch"])


def _optimizer_state(meta: dict[str, Any], tensors: dict[str, torch.Tensor]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, idx, name = key.split(".", 2)
            state.setdefault(int(idx), {})[name] = value
    for key, value in meta["plain"].items():
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = value
    return {"state": state, "param_groups": meta["param_groups"]}
