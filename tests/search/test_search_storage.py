"""Trials that survive: resume after SIGKILL, workers sharing a journal file, and two worker
processes on a real PostgreSQL server started by the test (one of them SIGKILLed mid-search)."""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import pytest

import slimkit as sk

sys.path.insert(0, str(Path(__file__).parent))
from search_worker import SPACE, tiny_setup  # noqa: E402

WORKER = str(Path(__file__).with_name("search_worker.py"))


def _trials(storage):
    import optuna

    return optuna.load_study(study_name="slimkit-search", storage=storage).get_trials(deepcopy=False)


def _journal(out: Path):
    import optuna
    from optuna.storages.journal import JournalFileBackend

    return optuna.storages.JournalStorage(JournalFileBackend(str(out / "search.journal")))


def _states(trials) -> Counter:
    return Counter(t.state.name for t in trials)


def _assert_no_recipe_evaluated_twice(trials) -> None:
    evaluated = [t.user_attrs["recipe_hash"] for t in trials
                 if t.state.name == "COMPLETE" and not t.user_attrs.get("cached")]
    assert len(evaluated) == len(set(evaluated)), evaluated
    for t in trials:  # a cached trial copies an evaluated one
        if t.state.name == "COMPLETE" and t.user_attrs.get("cached"):
            assert t.user_attrs["recipe_hash"] in evaluated


def _spawn(options: dict) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    return subprocess.Popen([sys.executable, WORKER, json.dumps(options)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _wait_for(predicate, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    start = time.time()
    while not predicate():
        if proc.poll() is not None:
            raise AssertionError(f"worker exited early: {proc.stderr.read().decode()[-2000:]}")
        if time.time() - start > timeout:
            raise AssertionError("timed out waiting for the worker")
        time.sleep(0.1)


def _finished(storage) -> int:
    try:
        return sum(t.state.name in ("COMPLETE", "PRUNED") for t in _trials(storage))
    except Exception:  # noqa: BLE001 - the study may not exist yet
        return 0


def _running(storage) -> int:
    try:
        return sum(t.state.name == "RUNNING" and "claim" in t.user_attrs for t in _trials(storage))
    except Exception:  # noqa: BLE001
        return 0


def _owned(storage, pid: int, states: tuple[str, ...], claimed: bool = False) -> int:
    """Trials of process ``pid`` in ``states`` (``claimed``: evaluating a recipe right now)."""
    try:
        trials = _trials(storage)
    except Exception:  # noqa: BLE001 - the study may not exist yet
        return 0
    return sum(t.user_attrs.get("owner", {}).get("pid") == pid and t.state.name in states
               and (not claimed or "claim" in t.user_attrs) for t in trials)


def test_resume_after_sigkill_continues_the_same_study(tmp_path) -> None:
    out = tmp_path / "out"
    proc = _spawn({"out_dir": str(out), "n_trials": 10, "sleep": 0.4})
    _wait_for(lambda: (out / "search.journal").exists() and _finished(_journal(out)) >= 3
              and _running(_journal(out)) >= 1, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = {t.number: t for t in _trials(_journal(out)) if t.state.name in ("COMPLETE", "PRUNED")}
    assert len(before) >= 3 and _states(_trials(_journal(out)))["RUNNING"] == 1

    model, calib, fidelity = tiny_setup()
    sr = sk.search(model, SPACE, calib=calib, eval=fidelity, objectives=("quality", "bytes"),
                   constraints=["quality_drop <= 0.05"], n_trials=10, out_dir=out)
    trials = _trials(_journal(out))
    states = _states(trials)
    assert states["COMPLETE"] + states["PRUNED"] == 10 and states["RUNNING"] == 0
    assert states["FAIL"] == 1  # the trial the kill interrupted, failed and not counted
    failed = next(t for t in trials if t.state.name == "FAIL")
    assert failed.user_attrs["failed_because"] == "its process died"
    for number, old in before.items():  # finished trials are kept as they were
        assert trials[number].state == old.state and trials[number].user_attrs.get("metrics") == old.user_attrs.get("metrics")
    _assert_no_recipe_evaluated_twice(trials)
    assert len(sr.trials) == 11 and sr.counts["evaluated"] + sr.counts["cached"] + sr.counts["pruned"] == 10 - len(before)
    assert (out / "pareto.json").is_file()


def test_two_workers_share_a_journal_study(tmp_path) -> None:
    model, calib, fidelity = tiny_setup()
    fidelity.sleep = 0.1
    sr = sk.search(model, SPACE, calib=calib, eval=fidelity, n_trials=12, out_dir=tmp_path / "out", workers=2)
    trials = _trials(_journal(tmp_path / "out"))
    states = _states(trials)
    assert states["COMPLETE"] + states["PRUNED"] == 12 and states["FAIL"] == 0 and len(trials) == 12
    owners = {t.user_attrs["owner"]["pid"] for t in trials}
    assert len(owners) == 2 and os.getpid() not in owners  # both workers ran trials, the parent none
    _assert_no_recipe_evaluated_twice(trials)
    assert sr.counts["evaluated"] + sr.counts["cached"] + sr.counts["pruned"] == 12


# ----------------------------------------------------------------------------- PostgreSQL
def _pg_bin() -> Path | None:
    for candidate in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (candidate / "initdb").is_file() and (candidate / "pg_ctl").is_file():
            return candidate
    found = shutil.which("pg_ctl")
    return Path(found).parent if found and shutil.which("initdb") else None


@pytest.fixture
def postgres_url():
    """A throwaway PostgreSQL server: initdb + pg_ctl in a temporary directory, trust auth on 127.0.0.1.
    initdb refuses to run as root, so as root the server runs as the ``postgres`` user (runuser)."""
    pytest.importorskip("psycopg", reason="psycopg (the search extra) is not installed")
    bindir = _pg_bin()
    if bindir is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) are not installed")
    prefix: list[str] = []
    data = Path(tempfile.mkdtemp(prefix="slimkit-pg-"))
    if os.geteuid() == 0:
        import pwd

        try:
            user = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no 'postgres' user to run the server as (initdb refuses root)")
        if shutil.which("runuser") is None:
            pytest.skip("running as root and runuser is missing (initdb refuses root)")
        os.chown(data, user.pw_uid, user.pw_gid)
        prefix = ["runuser", "-u", "postgres", "--"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    db = data / "db"
    subprocess.run(prefix + [str(bindir / "initdb"), "-D", str(db), "-A", "trust", "-U", "postgres"], check=True,
                   capture_output=True)
    opts = f"-p {port} -k {data} -c listen_addresses=127.0.0.1 -c fsync=off"
    subprocess.run(prefix + [str(bindir / "pg_ctl"), "-D", str(db), "-o", opts, "-l", str(data / "log"), "-w",
                             "start"], check=True, capture_output=True)
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(prefix + [str(bindir / "pg_ctl"), "-D", str(db), "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(data, ignore_errors=True)


def test_two_workers_on_postgresql_one_killed(postgres_url) -> None:
    storage = postgres_url.replace("postgresql://", "postgresql+psycopg://")
    first = _spawn({"storage": postgres_url, "n_trials": 14, "sleep": 0.8, "seed": 0})
    second = _spawn({"storage": postgres_url, "n_trials": 14, "sleep": 0.8, "seed": 1})
    pid_second = second.pid
    _wait_for(lambda: _owned(storage, pid_second, ("COMPLETE", "PRUNED")) >= 1
              and _owned(storage, pid_second, ("RUNNING",), claimed=True) >= 1, second)
    second.send_signal(signal.SIGKILL)
    second.wait()
    assert first.wait(timeout=180) == 0, first.stderr.read().decode()[-2000:]
    trials = _trials(storage)
    states = _states(trials)
    assert states["COMPLETE"] + states["PRUNED"] == 14 and states["RUNNING"] == 0
    assert states["FAIL"] == 1  # the killed worker lost only its running trial
    by_owner = Counter(t.user_attrs["owner"]["pid"] for t in trials if t.state.name in ("COMPLETE", "PRUNED"))
    assert set(by_owner) == {first.pid, pid_second} and by_owner[pid_second] >= 1
    _assert_no_recipe_evaluated_twice(trials)
