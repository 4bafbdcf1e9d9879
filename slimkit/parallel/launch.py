"""Starting data-parallel runs: ``torchrun`` for the CLI (``slimkit compress ... --nproc N``) and an
in-process spawner (``torch.multiprocessing``) for library users and tests.

Both give every worker the torchrun environment (``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``,
``MASTER_ADDR``, ``MASTER_PORT``), so :func:`slimkit.train.train` picks the process group up by
itself (gloo on CPU, nccl on GPU) and the same code runs unchanged in 1 or N processes.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Callable, Sequence
from typing import Any

from slimkit.core.errors import ConfigError

__all__ = ["free_port", "torchrun_command", "launch_cli", "spawn", "strip_nproc", "under_torchrun"]


def free_port() -> int:
    """A TCP port free on localhost right now (for the rendezvous)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def under_torchrun() -> bool:
    """True inside a worker started by torchrun / :func:`spawn`."""
    return "LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ


def _check_nproc(nproc: Any) -> int:
    if isinstance(nproc, bool) or not isinstance(nproc, int) or nproc < 1:
        raise ConfigError(f"nproc = {nproc!r} is out of range; valid range is [1, inf) processes")
    return nproc


def strip_nproc(argv: Sequence[str]) -> list[str]:
    """``argv`` without ``--nproc N`` / ``--nproc=N`` (what each worker runs)."""
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--nproc":
            skip = True
        elif not arg.startswith("--nproc="):
            out.append(arg)
    return out


def torchrun_command(cli_argv: Sequence[str], nproc: int) -> list[str]:
    """The command line that runs ``slimkit <cli_argv>`` in ``nproc`` processes with torchrun."""
    _check_nproc(nproc)
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
            "-m", "slimkit.cli.main", *strip_nproc(cli_argv)]


def launch_cli(cli_argv: Sequence[str], nproc: int) -> int:
    """Re-run this slimkit command under torchrun with ``nproc`` workers; returns the exit code.

    Only rank 0 writes the output directory (the CLI checks :func:`slimkit.parallel.is_main_process`).
    On CPU each worker gets ``cores // nproc`` threads so the workers do not oversubscribe the machine.
    """
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    return subprocess.call(torchrun_command(cli_argv, nproc), env=env)


def _worker(local_rank: int, fn: Callable[..., Any], nproc: int, port: int, args: tuple[Any, ...],
            threads: int) -> None:
    import torch
    import torch.distributed as dist

    from slimkit.parallel.dist import ensure_process_group

    os.environ.update(RANK=str(local_rank), LOCAL_RANK=str(local_rank), WORLD_SIZE=str(nproc),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(threads)
    ensure_process_group()
    try:
        fn(local_rank, *args)
        # Every rank waits for the slowest (rank 0 often writes files after training) before the group
        # is torn down: a gloo rank that destroys its group while a peer is still connected can abort
        # with "terminate called without an active exception" (seen on CI).
        dist.barrier()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def spawn(fn: Callable[..., Any], nproc: int, args: tuple[Any, ...] = (), *, threads: int = 1) -> None:
    """Run ``fn(rank, *args)`` in ``nproc`` fresh processes joined in one process group (like torchrun
    on one machine). ``fn`` must be importable (a module-level function). Raises if a worker fails."""
    import torch.multiprocessing as mp

    _check_nproc(nproc)
    mp.spawn(_worker, args=(fn, nproc, free_port(), tuple(args), threads), nprocs=nproc, join=True)
