"""Every directory slimkit writes, written one way: atomically, marked, and never over a user's files.

slimkit writes a directory by building it in a hidden temporary directory beside the target and
renaming it into place only when complete (:class:`atomic_dir`). Each such directory carries a
marker file, :data:`MARKER`, a small JSON record of what wrote it and which entries it wrote.

Replacing an existing path is allowed only when the caller passes ``overwrite=True`` **and** the
path is a directory slimkit wrote (it carries the marker, or is a checkpoint / report directory
from a slimkit release before the marker) **and** it holds nothing but the entries slimkit wrote.
Any other existing path (a user's directory, a file, a symlink, a slimkit directory a user has
since put their own files into) is refused with a :class:`CheckpointError` naming it, and
nothing in it is touched. Why so strict: ``--out .`` or ``--out ~/work`` must never delete a
user's work, and a file someone added to an old output is theirs too.
"""
from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

from slimkit.core.errors import CheckpointError

__all__ = ["MARKER", "atomic_dir", "check_replaceable", "owned_entries", "is_slimkit_output", "remove_output"]

#: the marker file in every directory slimkit writes
MARKER = ".slimkit-output"

# directories written before the marker existed: recognised by their manifest / report, and only
# these entries count as slimkit's
_LEGACY_CHECKPOINT = frozenset({"model.safetensors", "slimkit.json", "report.json", "report.md", "report.png"})
_LEGACY_REPORT = frozenset({"report.json", "report.md", "report.png"})


def owned_entries(path: Path) -> frozenset[str] | None:
    """The entry names slimkit wrote into directory ``path``, or ``None`` if slimkit did not write it."""
    if path.is_symlink() or not path.is_dir():
        return None
    marker = path / MARKER
    if marker.is_file():
        try:
            record = json.loads(marker.read_text(encoding="utf-8"))
            files = record["files"] if record.get("written_by") == "slimkit" else None
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None
        if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
            return None
        return frozenset(files) | {MARKER}
    if _json_has(path / "slimkit.json", {"format"}, {"format": "slimkit"}):
        return _LEGACY_CHECKPOINT
    if _json_has(path / "report.json", {"before", "after", "steps", "environment"}):
        return _LEGACY_REPORT
    return None


def _json_has(path: Path, keys: set[str], values: dict[str, Any] | None = None) -> bool:
    """Whether ``path`` is a JSON object with ``keys`` (and ``values``): a slimkit file, not a namesake."""
    try:
        data = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
    except (OSError, ValueError):
        return False
    if not isinstance(data, dict) or not keys <= data.keys():
        return False
    return all(data.get(k) == v for k, v in (values or {}).items())


def is_slimkit_output(path: str | Path) -> bool:
    """Whether ``path`` is a directory slimkit wrote that holds only what slimkit wrote into it."""
    p = Path(path)
    owned = owned_entries(p)
    return owned is not None and not _foreign(p, owned)


def _foreign(path: Path, owned: frozenset[str]) -> list[str]:
    return sorted(e.name for e in path.iterdir() if e.name not in owned)


def check_replaceable(path: str | Path, overwrite: bool, what: str = "output directory") -> None:
    """Raise :class:`CheckpointError` unless writing ``path`` would destroy nothing but slimkit's own output.

    A path that does not exist is fine. An existing one needs ``overwrite=True`` and must be a
    directory slimkit wrote (see the module docstring) holding only the entries slimkit wrote.
    """
    p = Path(path)
    if not p.exists() and not p.is_symlink():
        return
    if not overwrite:
        raise CheckpointError(f"{what} {p} already exists; pass overwrite=True (--overwrite) to replace it "
                              "(only a directory slimkit wrote can be replaced)")
    if p.is_symlink() or not p.is_dir():
        kind = "a symlink" if p.is_symlink() else "a file"
        raise CheckpointError(f"refusing to replace {p}: it is {kind}, not a directory slimkit wrote; "
                              "nothing was touched; choose another output path")
    owned = owned_entries(p)
    if owned is None:
        raise CheckpointError(f"refusing to replace {p}: slimkit did not write it (no {MARKER} marker), so it may "
                              "hold your files; nothing was touched; choose a new output directory")
    foreign = _foreign(p, owned)
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise CheckpointError(f"refusing to replace {p}: it holds entries slimkit did not write ({shown}); "
                              "nothing was touched; move them out or choose a new output directory")


def remove_output(path: str | Path) -> None:
    """Delete a directory slimkit wrote (refused, with nothing touched, for anything else).

    The directory is first renamed aside in one step, so a reader never sees it half deleted.
    """
    p = Path(path)
    check_replaceable(p, overwrite=True, what="directory")
    trash = p.parent / f".{p.name}.old-{uuid.uuid4().hex[:8]}"
    os.replace(p, trash)
    shutil.rmtree(trash, ignore_errors=True)


def _write_marker(directory: Path, kind: str) -> None:
    from slimkit import __version__

    record = {"written_by": "slimkit", "slimkit_version": __version__, "kind": kind,
              "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
              "files": sorted(e.name for e in directory.iterdir() if e.name != MARKER)}
    (directory / MARKER).write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")


class atomic_dir:
    """Context manager yielding a temp dir that becomes ``target`` only if the block succeeds.

    On success the marker is written, files are synced and the temp dir is renamed onto
    ``target``; an existing ``target`` is replaced only if :func:`check_replaceable` allows it
    (checked again at that moment, in case something appeared while writing). On failure
    (Ctrl-C included) the temp dir is removed and ``target`` is left as it was.
    """

    def __init__(self, target: Path, *, overwrite: bool = False, kind: str = "output") -> None:
        self.target = Path(target)
        self.overwrite = overwrite
        self.kind = kind
        self.tmp = self.target.parent / f".{self.target.name}.tmp-{uuid.uuid4().hex[:8]}"

    def __enter__(self) -> Path:
        check_replaceable(self.target, self.overwrite)
        self.target.parent.mkdir(parents=True, exist_ok=True)
        self.tmp.mkdir()
        return self.tmp

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            return
        try:
            self._commit()
        except BaseException:
            shutil.rmtree(self.tmp, ignore_errors=True)
            raise

    def _commit(self) -> None:
        _write_marker(self.tmp, self.kind)
        for f in self.tmp.iterdir():
            if not f.is_file():
                continue
            f.chmod(0o644)  # safetensors writes 0600; an output is meant to be shared
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        old = None
        if self.target.exists() or self.target.is_symlink():
            check_replaceable(self.target, self.overwrite)
            old = self.target.parent / f".{self.target.name}.old-{uuid.uuid4().hex[:8]}"
            os.replace(self.target, old)
        os.replace(self.tmp, self.target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
