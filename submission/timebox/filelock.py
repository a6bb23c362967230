"""Advisory locks (``fcntl.flock``) between the processes of one machine that share a folder: exclusive to
build or write something, shared to use it. The kernel drops a lock when its process dies, so a lock that
can be taken means its last holder finished or was killed.

Example::

    lock = FileLock(cache_dir / key, directory=True)
    lock.take(exclusive=True, on_wait=print)   # blocks while another process holds it, saying so once
    ...                                        # build it
    lock.take(exclusive=False)                 # keep using it; others may use it too, none may remove it
    lock.release()
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


POLL_S = 0.2  # how often a stoppable wait checks should_stop()


class WaitStopped(Exception):
    """``should_stop()`` became true while :meth:`FileLock.take` waited."""


class FileLock:
    """An flock on ``path``: a lock file (created with its folder) or, with ``directory``, the folder itself."""

    def __init__(self, path: str | Path, directory: bool = False):
        self.path, self.directory = Path(path), directory
        self._fd: int | None = None

    def take(self, exclusive: bool, on_wait: Callable[[str], None] | None = None,
             should_stop: Callable[[], bool] | None = None) -> None:
        """Hold the lock (or convert the one held), blocking; ``on_wait`` is told once if another process has it.
        With ``should_stop``, the wait polls it (every ``POLL_S``) and raises :class:`WaitStopped` once it is true:
        a blocked flock would outlast a SIGTERM (Python retries the interrupted call)."""
        mode = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
        while True:
            fd = self._open()
            try:
                fcntl.flock(fd, mode | fcntl.LOCK_NB)
            except BlockingIOError:
                if on_wait is not None:
                    on_wait(f"waiting for another process that holds {self.path}")
                    on_wait = None
                self._wait(fd, mode, should_stop)
            if self._current():
                return
            self.release()  # removed or replaced while we waited: lock what is there now

    def _wait(self, fd: int, mode: int, should_stop: Callable[[], bool] | None) -> None:
        if should_stop is None:
            fcntl.flock(fd, mode)
            return
        while True:
            if should_stop():
                self.release()
                raise WaitStopped(f"stopped while waiting for {self.path}")
            try:
                fcntl.flock(fd, mode | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                time.sleep(POLL_S)

    def try_take(self, exclusive: bool) -> bool:
        """Hold the lock if no other process has it, without waiting; False when one has or the path is gone."""
        try:
            fd = self._open(create=False)
            fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
        except (BlockingIOError, FileNotFoundError):
            self.release()
            return False
        if self._current():
            return True
        self.release()
        return False

    def release(self) -> None:
        """Drop the lock (closing its descriptor)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    @contextmanager
    def held(self, exclusive: bool, on_wait: Callable[[str], None] | None = None) -> Iterator[FileLock]:
        """:meth:`take` for the ``with`` block, then :meth:`release`."""
        self.take(exclusive, on_wait)
        try:
            yield self
        finally:
            self.release()

    def __del__(self) -> None:
        self.release()

    def __reduce__(self):
        raise TypeError("a FileLock cannot be copied: its descriptor belongs to the object that took it")

    def _open(self, create: bool = True) -> int:
        if self._fd is None:
            if self.directory:
                if create:
                    self.path.mkdir(parents=True, exist_ok=True)
                self._fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY)
            else:
                if create:
                    self.path.parent.mkdir(parents=True, exist_ok=True)
                self._fd = os.open(self.path, os.O_RDWR | (os.O_CREAT if create else 0), 0o666)
        return self._fd

    def _current(self) -> bool:
        """Whether the locked inode is still the one at ``path`` (a remover deletes what it locked)."""
        try:
            here, held = os.stat(self.path), os.fstat(self._fd)
        except FileNotFoundError:
            return False
        return (here.st_dev, here.st_ino) == (held.st_dev, held.st_ino)
