"""Where a search's trials live (an Optuna storage), a lock shared by every worker, and liveness.

* no ``storage``: an Optuna journal file ``search.journal`` in the output directory, so running the
  same search again with the same directory continues the same study;
* ``"journal:/path/file"``: a journal file elsewhere (one machine, or a shared file system);
* ``"sqlite:///file.db"``, ``"postgresql://user@host/db"``: Optuna's RDB storage (many machines);
* ``"memory"``: nothing kept (one process; used for quick comparisons).

Every worker takes the :meth:`Store.lock` around the few steps that must not interleave (counting
trials before starting one, claiming a recipe so no two workers evaluate the same one); the lock
is a file lock for files and a PostgreSQL advisory lock for PostgreSQL, so it is released by the
operating system or the server when a process dies.

Liveness: each running trial records its host, process id and process start time, and a heartbeat
time refreshed every :data:`HEARTBEAT_S` seconds. A RUNNING trial whose process is gone (same
host) or whose heartbeat is older than :data:`GRACE_S` (another host) is marked FAIL, so a killed
worker loses at most the trial it was running and that trial is not counted.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from slimkit.core.errors import ConfigError

__all__ = ["Store", "open_store", "HEARTBEAT_S", "GRACE_S", "JOURNAL_NAME", "LOCK_NAME"]

HEARTBEAT_S = 5.0
GRACE_S = 60.0
JOURNAL_NAME = "search.journal"
LOCK_NAME = "search.lock"
_HOST = socket.gethostname()


class Store:
    """An Optuna storage plus the cross-process lock of this search."""

    def __init__(self, spec: str, kind: str, lock_path: Path | None = None) -> None:
        self.spec, self.kind, self.lock_path = spec, kind, lock_path
        self.storage = _make_storage(spec, kind)
        self._thread_lock = threading.RLock()
        self._pg_conn: Any = None

    def describe(self) -> str:
        return self.spec if self.kind != "postgresql" else _hide_password(self.spec)

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Exclusive across every process of this study (and threads of this one)."""
        with self._thread_lock:
            if self.kind == "postgresql":
                with self._pg_lock():
                    yield
            elif self.lock_path is not None:
                with open(self.lock_path, "a+") as fh:
                    fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
                    try:
                        yield
                    finally:
                        fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
            else:
                yield

    @contextlib.contextmanager
    def _pg_lock(self) -> Iterator[None]:
        from sqlalchemy import text

        if self._pg_conn is None:
            self._pg_conn = self.storage.engine.connect()
        key = int(hashlib.sha256(b"slimkit-search-lock").hexdigest()[:15], 16)
        self._pg_conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": key})
        self._pg_conn.commit()
        try:
            yield
        finally:
            self._pg_conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
            self._pg_conn.commit()

    def close(self) -> None:
        if self._pg_conn is not None:
            self._pg_conn.close()
            self._pg_conn = None
        engine = getattr(self.storage, "engine", None)
        if engine is not None:
            engine.dispose()


def open_store(storage: str | None, out_dir: Path | None) -> Store:
    """Resolve ``storage`` (see the module docstring); a default journal needs ``out_dir``."""
    if storage is None:
        if out_dir is None:
            raise ConfigError("sk.search needs out_dir= for its default journal storage (or storage='memory')")
        return Store(str(out_dir / JOURNAL_NAME), "journal", out_dir / LOCK_NAME)
    if not isinstance(storage, str):
        raise ConfigError(f"storage must be a URL string, got {type(storage).__name__}")
    if storage in ("memory", ":memory:"):
        return Store("memory", "memory")
    if storage.startswith("journal:"):
        path = Path(storage[len("journal:"):]).expanduser().resolve()
        if not path.parent.is_dir():
            raise ConfigError(f"storage {storage!r}: directory {str(path.parent)!r} does not exist")
        return Store(str(path), "journal", path.with_name(path.name + ".slimkit-lock"))
    if storage.startswith("sqlite:///"):
        path = Path(storage[len("sqlite:///"):]).expanduser().resolve()
        return Store(storage, "sqlite", path.with_name(path.name + ".slimkit-lock"))
    if storage.startswith(("postgresql://", "postgresql+psycopg://", "postgres://")):
        return Store(_pg_url(storage), "postgresql")
    raise ConfigError(f"storage {_hide_password(storage)!r} is not supported; use a postgresql:// or sqlite:/// URL, "
                      "'journal:/path/file', 'memory', or nothing (a journal file in out_dir)")


def _pg_url(url: str) -> str:
    """SQLAlchemy's plain ``postgresql://`` means psycopg2; slimkit's search extra installs psycopg 3."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


def _hide_password(url: str) -> str:
    if "://" not in url or "@" not in url:
        return url
    scheme, rest = url.split("://", 1)
    creds, host = rest.rsplit("@", 1)
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}{':***' if ':' in creds else ''}@{host}"


def _make_storage(spec: str, kind: str) -> Any:
    import optuna

    if kind == "memory":
        return optuna.storages.InMemoryStorage()
    if kind == "journal":
        from optuna.storages.journal import JournalFileBackend

        return optuna.storages.JournalStorage(JournalFileBackend(spec))
    try:
        return optuna.storages.RDBStorage(spec, engine_kwargs={"pool_pre_ping": True})
    except Exception as exc:  # noqa: BLE001 - any driver / connection error is the user's URL
        raise ConfigError(f"storage {_hide_password(spec)!r}: cannot open it: {type(exc).__name__}: "
                          f"{str(exc).splitlines()[0] if str(exc) else ''}") from None


# ----------------------------------------------------------------------------- liveness
def process_identity() -> dict[str, Any]:
    """Host, pid and the process start time (so a reused pid is not taken for the same process)."""
    return {"host": _HOST, "pid": os.getpid(), "pid_start": _start_time(os.getpid())}


def _start_time(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]  # field 22: starttime in clock ticks since boot


def is_stale(attrs: dict[str, Any], now: float | None = None) -> bool:
    """Whether the process that ran a RUNNING trial with these user attributes is gone."""
    owner = attrs.get("owner")
    if not isinstance(owner, dict):
        return False  # not started by slimkit: never failed by us
    if owner.get("host") == _HOST:
        pid = int(owner.get("pid", -1))
        if pid == os.getpid():
            return False
        return _start_time(pid) is None or _start_time(pid) != owner.get("pid_start")
    beat = float(attrs.get("beat", 0.0))
    return (now if now is not None else time.time()) - beat > GRACE_S


class Heartbeat:
    """Refreshes a running trial's ``beat`` attribute every :data:`HEARTBEAT_S` seconds."""

    def __init__(self, storage: Any, trial_id: int) -> None:
        self.storage, self.trial_id = storage, trial_id
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "Heartbeat":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            with contextlib.suppress(Exception):  # the trial may have just finished
                self.storage.set_trial_user_attr(self.trial_id, "beat", time.time())
