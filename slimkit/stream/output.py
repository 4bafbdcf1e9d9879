"""The streamed checkpoint on disk: shards written block by block, a progress record, one rename.

Everything is built in ``.<out>.stream-partial`` beside the output directory (so the rename is
atomic on one filesystem): one safetensors shard per decoder block, then the shard of the
modules outside the blocks, ``model.safetensors.index.json`` and ``slimkit.json``. The work files
(``.stream/progress.json``, calibration inputs) live inside it and are removed before the
directory is renamed into place by :class:`slimkit.io.outputs.atomic_dir`'s commit (marker, fsync,
replace rules). Any failure, Ctrl-C included, removes the partial directory, so no partial output
is ever left; only a process killed outright leaves it, and ``resume=True`` continues from the
last block its progress record lists as finished.
"""
from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from slimkit.core.errors import CheckpointError
from slimkit.io.checkpoint import INDEX_FILE, MANIFEST_FILE
from slimkit.io.outputs import atomic_dir, check_replaceable

__all__ = ["StreamOutput", "write_tensors", "partial_dir"]

_WORK = ".stream"
_PROGRESS = "progress.json"


def partial_dir(out: Path) -> Path:
    """Where the output of ``out`` is built (a fixed name, so a killed run can be resumed)."""
    return out.parent / f".{out.name}.stream-partial"


def write_tensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    """Write one safetensors shard (the one place output bytes are written)."""
    save_file(tensors, str(path), metadata={"format": "slimkit"})


class StreamOutput:
    """The partial output directory and its progress record."""

    def __init__(self, out: Path, *, overwrite: bool, resume: bool, fingerprint: str, n_shards: int) -> None:
        check_replaceable(out, overwrite)
        self.out, self.overwrite, self.fingerprint, self.n_shards = out, overwrite, fingerprint, n_shards
        self.tmp = partial_dir(out)
        self.work = self.tmp / _WORK
        self.progress: dict[str, Any] = {"fingerprint": fingerprint, "done": 0, "weight_map": {}, "encodings": {},
                                         "edits": [], "blocks": []}
        if resume and (self.work / _PROGRESS).is_file():
            self._resume()
        else:
            self._fresh()
        #: the block a resumed run started at (None for a fresh run)
        self.resumed_at = self.done if resume and self.done else None

    # ------------------------------------------------------------------ setup
    def _fresh(self) -> None:
        if self.tmp.exists():
            if not (self.work / _PROGRESS).is_file():
                raise CheckpointError(f"{self.tmp} exists but is not a partial stream slimkit wrote; nothing was "
                                      "touched; remove it or choose another output")
            shutil.rmtree(self.tmp)
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.work.mkdir(parents=True)
        self._save_progress()  # from the start: a run killed before its first block is recognisably slimkit's

    def _resume(self) -> None:
        try:
            record = json.loads((self.work / _PROGRESS).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"{self.work / _PROGRESS} is unreadable: {exc}") from None
        if record.get("fingerprint") != self.fingerprint:
            raise CheckpointError(f"{self.tmp} was started with another model, recipe or calibration data; "
                                  "it cannot be resumed (run without resume to start over)")
        self.progress = record
        wanted = set(record["weight_map"].values())
        for f in self.tmp.glob("*.safetensors"):  # a shard of the block that was cut short
            if f.name not in wanted:
                f.unlink()

    @property
    def done(self) -> int:
        """Blocks already finished (0 for a fresh run)."""
        return int(self.progress["done"])

    # ------------------------------------------------------------------ writing
    def shard_name(self, index: int) -> str:
        return f"model-{index + 1:05d}-of-{self.n_shards:05d}.safetensors"

    def write_shard(self, index: int, tensors: dict[str, torch.Tensor], encodings: dict[str, Any]) -> None:
        """Write shard ``index`` and remember where its tensors are."""
        name = self.shard_name(index)
        try:
            write_tensors(tensors, self.tmp / name)
        except OSError as exc:
            raise _write_error(self.tmp / name, exc) from None
        self.progress["weight_map"].update({k: name for k in tensors})
        self.progress["encodings"].update(encodings)

    def finish_block(self, edits: list[list[dict[str, Any]]], stats: dict[str, Any]) -> None:
        """Record one more finished block (written atomically: temp file + rename)."""
        self.progress["done"] += 1
        self.progress["edits"] = edits
        self.progress["blocks"].append(stats)
        self._save_progress()

    def _save_progress(self) -> None:
        path = self.work / _PROGRESS
        try:
            (self.work / "progress.tmp").write_text(json.dumps(self.progress), encoding="utf-8")
            os.replace(self.work / "progress.tmp", path)
        except OSError as exc:
            raise _write_error(path, exc) from None

    def commit(self, manifest: dict[str, Any]) -> Path:
        """Write the index and manifest, drop the work files and rename the directory into place."""
        try:
            index = {"metadata": {"format": "slimkit"}, "weight_map": self.progress["weight_map"]}
            (self.tmp / INDEX_FILE).write_text(json.dumps(index, indent=1), encoding="utf-8")
            (self.tmp / MANIFEST_FILE).write_text(json.dumps(manifest, indent=1, default=str), encoding="utf-8")
            shutil.rmtree(self.work)
            publisher = atomic_dir(self.out, overwrite=self.overwrite, kind="checkpoint")
            publisher.tmp = self.tmp
            publisher._commit()  # marker, fsync, replace rules: the same commit every slimkit output uses
        except OSError as exc:
            raise _write_error(self.out, exc) from None
        return self.out

    def discard(self) -> None:
        """Remove the partial directory (after a failure: no partial output is left)."""
        shutil.rmtree(self.tmp, ignore_errors=True)


def _write_error(path: Path, exc: OSError) -> CheckpointError:
    why = "the disk is full" if exc.errno == errno.ENOSPC else exc.strerror or str(exc)
    return CheckpointError(f"cannot write {path}: {why}; no output was left")
