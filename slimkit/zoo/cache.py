"""The on-disk cache for converted zoo artefacts, built atomically.

Some zoo models ship in a form that is slow to load (a quantised GGUF file, a zip split over
five packages). They are converted once into ``cache_dir()/<name>/`` and loaded from there.
A cache entry is trusted only if it was published complete:

1. the builder writes into a fresh temporary directory beside the target
   (``.<name>.tmp-XXXX``);
2. a marker file (:data:`MARKER`) holding the entry's *key* is written last;
3. the directory is renamed onto the target in one ``os.replace``.

A killed or failed build therefore leaves at most a temporary directory (removed on failure, or
swept by the next build of that entry), never a half-written target; a target whose marker is
missing or holds another key (e.g. the source package was upgraded) is rebuilt. Concurrent
builders are serialised by an advisory lock file (``.<name>.lock``, POSIX ``flock``, released by
the OS if the process dies), so the second one finds the published entry and does not rebuild;
where no ``flock`` exists both build and the first rename wins.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from slimkit.core.errors import SlimkitError

__all__ = ["cache_dir", "cached_build", "is_complete", "MARKER"]

MARKER = ".slimkit-complete.json"
_STALE_TMP_S = 6 * 3600.0


def cache_dir() -> Path:
    """Root of slimkit's cache: ``$SLIMKIT_CACHE``, else ``$XDG_CACHE_HOME/slimkit``, else
    ``~/.cache/slimkit`` (not created here)."""
    explicit = os.environ.get("SLIMKIT_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg:
        return Path(xdg).expanduser() / "slimkit"
    return Path.home() / ".cache" / "slimkit"


def is_complete(path: Path, key: str) -> bool:
    """True if ``path`` is a published cache entry whose marker holds ``key``."""
    try:
        marker = json.loads((path / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(marker, dict) and marker.get("key") == key


def cached_build(name: str, key: str, build: Callable[[Path], None]) -> Path:
    """Return ``cache_dir()/name``, first running ``build(tmp_dir)`` and publishing it atomically
    if no complete entry with this ``key`` exists (see the module docstring)."""
    target = cache_dir() / name
    if is_complete(target, key):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with _build_lock(target) as exclusive:
        if is_complete(target, key):  # built by another process while we waited
            return target
        # Holding the lock, any temporary directory left is from a dead build.
        _sweep_stale_tmp(target, max_age_s=0.0 if exclusive else _STALE_TMP_S)
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=target.parent))
        tmp.chmod(0o755)  # mkdtemp makes it private; the published entry is a normal directory
        try:
            build(tmp)
            marker = {"key": key, "built_at": time.time()}
            (tmp / MARKER).write_text(json.dumps(marker), encoding="utf-8")
            _publish(tmp, target, key)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target


@contextmanager
def _build_lock(target: Path) -> Iterator[bool]:
    """Hold an exclusive advisory lock for building ``target``; yields whether it is exclusive
    (False where ``flock`` is missing, e.g. on Windows: then rename-wins publishing applies)."""
    try:
        import fcntl
    except ImportError:
        yield False
        return
    with open(target.parent / f".{target.name}.lock", "a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield True
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _publish(tmp: Path, target: Path, key: str) -> None:
    """Rename ``tmp`` onto ``target``, replacing an incomplete or outdated entry; if another
    process published a complete entry first, keep theirs."""
    for _ in range(3):
        if is_complete(target, key):
            return
        if target.exists():
            _discard(target)
        try:
            os.replace(tmp, target)
            return
        except OSError:  # another process published (or is replacing) the entry meanwhile
            continue
    if not is_complete(target, key):
        raise SlimkitError(f"could not publish the cache entry {target}; remove it and retry")


def _discard(path: Path) -> None:
    """Move an untrusted entry aside (atomic) and delete it, so no reader sees it half-deleted."""
    trash = path.with_name(f".{path.name}.tmp-trash-{os.getpid()}-{time.monotonic_ns()}")
    try:
        os.replace(path, trash)
    except OSError:
        return
    shutil.rmtree(trash, ignore_errors=True)


def _sweep_stale_tmp(target: Path, max_age_s: float) -> None:
    """Delete temporary directories of killed builds (older than ``max_age_s`` seconds)."""
    now = time.time()
    for tmp in target.parent.glob(f".{target.name}.tmp-*"):
        try:
            if now - tmp.stat().st_mtime >= max_age_s:
                shutil.rmtree(tmp, ignore_errors=True)
        except OSError:
            continue
