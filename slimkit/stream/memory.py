"""Resident memory, measured: a background sampler of ``VmRSS`` and the kernel's ``ru_maxrss``.

``ru_maxrss`` (getrusage) is a process-lifetime maximum, so it cannot say which block needed the
memory; each block's peak is therefore the largest ``VmRSS`` (``/proc/self/status``) seen by a
thread sampling every ``interval`` seconds while that block ran. A spike shorter than the interval
can be missed by the per-block figure; the overall figure also reports ``ru_maxrss``, which misses
nothing (but note that ``/proc/self/clear_refs`` resets, as the weight-only handlers do when they
start, make it the peak since that reset).
"""
from __future__ import annotations

import ctypes
import resource
import sys
import threading
from typing import Any

__all__ = ["RssSampler", "rss_mb", "maxrss_mb", "release_freed_memory"]


def rss_mb() -> float:
    """Current resident set size in MiB (``VmRSS``; 0.0 where /proc is absent)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def maxrss_mb() -> float:
    """``getrusage(RUSAGE_SELF).ru_maxrss`` in MiB."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024


def release_freed_memory() -> None:
    """Give the heap's free pages back to the kernel (glibc ``malloc_trim``; a no-op elsewhere).

    glibc raises its mmap threshold after large blocks are freed, so later weight-sized
    allocations come from the heap, and freeing them leaves that memory resident: streaming
    would keep the largest freed blocks (the fp32 embedding, the quantizer's temporaries) counted
    in its RSS for the whole run unless the heap is trimmed after each phase.
    """
    global _LIBC
    if _LIBC is None:
        try:
            _LIBC = ctypes.CDLL("libc.so.6")
        except OSError:
            _LIBC = False
    if _LIBC:
        _LIBC.malloc_trim(0)


_LIBC: Any = None


class RssSampler:
    """Samples ``VmRSS`` in a daemon thread; :meth:`window` returns and restarts the running peak."""

    def __init__(self, interval: float = 0.02) -> None:
        self.interval = interval
        self.peak = self.window_peak = rss_mb()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            now = rss_mb()
            self.peak = max(self.peak, now)
            self.window_peak = max(self.window_peak, now)

    def __enter__(self) -> "RssSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()

    def window(self) -> float:
        """Peak VmRSS (MiB) since the previous call, then start a new window."""
        now = rss_mb()
        peak = max(self.window_peak, now)
        self.peak = max(self.peak, peak)
        self.window_peak = now
        return round(peak, 1)
