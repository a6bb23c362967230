"""Jobs run in worker processes that the run's signals cannot kill, and how many workers the CPUs allow.

Ctrl-C and a SIGTERM to the process group reach every worker too. Workers ignore SIGINT and SIGTERM (they
are spawned with both blocked, so none is lost in the window before they ignore them); the parent alone
decides to stop: its handlers set a flag that ``should_stop`` reads between jobs.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any, TypeVar

CGROUP = Path("/sys/fs/cgroup")
_STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}
R = TypeVar("R")


class Stopped(Exception):
    """should_stop() was true between jobs: the jobs not yet started were dropped."""


def usable_cpus(cgroup: Path = CGROUP) -> int:
    """The CPUs this process may run on: its affinity mask, capped by the cgroup's CPU quota rounded down
    (v2 ``cpu.max``, v1 ``cpu/cpu.cfs_quota_us`` over ``cpu.cfs_period_us``); at least 1."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # no affinity on this platform (macOS)
        cpus = os.cpu_count() or 1
    quota = _cgroup_quota(cgroup)
    return max(1, min(cpus, int(quota)) if quota is not None else cpus)


def _cgroup_quota(root: Path) -> float | None:
    """CPUs' worth of the cgroup's quota, or None when it has none (or its files are absent or unreadable)."""
    v2 = _read(root / "cpu.max").split()
    if v2:
        return _ratio(*v2) if len(v2) == 2 else None
    return _ratio(_read(root / "cpu" / "cpu.cfs_quota_us"), _read(root / "cpu" / "cpu.cfs_period_us"))


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return ""


def _ratio(quota: str, period: str) -> float | None:
    """quota / period, None for "max", -1 (no quota) or anything unreadable."""
    try:
        q, p = int(quota), int(period)
    except ValueError:
        return None
    return q / p if q > 0 and p > 0 else None


def run_jobs(fn: Callable[..., R], jobs: Sequence[tuple], workers: int,
             should_stop: Callable[[], bool] | None = None) -> Iterator[R]:
    """fn(*job) for each job, yielded as they finish: in this process when workers == 1, else in that many
    spawned processes (never forked: the parent may hold TensorFlow) with at most one job each in flight.
    Raises Stopped once should_stop() is true (checked before each job starts; jobs running finish first)."""
    stop, n = should_stop or (lambda: False), min(workers, len(jobs))
    if n <= 1:
        for job in jobs:
            if stop():
                raise Stopped
            yield fn(*job)
        return
    pool = ProcessPoolExecutor(n, mp_context=multiprocessing.get_context("spawn"), initializer=_ignore_stop_signals)
    try:
        queue, running = deque(jobs), set()
        while queue or running:
            while queue and len(running) < n:
                if stop():
                    raise Stopped
                running.add(_submit(pool, fn, queue.popleft()))
            done, running = wait(running, return_when=FIRST_COMPLETED)
            yield from (future.result() for future in done)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _submit(pool: ProcessPoolExecutor, fn: Callable[..., Any], job: tuple) -> Future:
    """pool.submit with SIGINT and SIGTERM blocked: a worker it spawns starts with them blocked."""
    before = signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
    try:
        return pool.submit(fn, *job)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, before)


def _ignore_stop_signals() -> None:
    """Worker initializer: SIGINT and SIGTERM ignored (a pending one is dropped), then unblocked."""
    for sig in _STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)
