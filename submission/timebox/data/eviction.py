"""Keeps the decoded-image cache bounded: entries that killed builds left are swept, and complete entries go
least recently used first (their ``complete`` marker's mtime, touched on each use) until the cache fits its
cap. An entry is removed only under its exclusive flock taken without waiting, so what a live run builds or
uses (it holds the entry's lock) always stays, and a dead run's lock is free (the kernel drops it).

Example::

    sweep(cache_dir)                  # incomplete entries no live process holds
    evict(cache_dir, 20 * 10**9)      # then the least recently used, until at most 20 GB remain
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from timebox.filelock import FileLock

MARKER = "complete"  # the marker a complete entry has (timebox.data.cache writes it last)
KEY = re.compile(r"[0-9a-f]{64}")  # only folders named like cache keys are ever removed


@dataclass(frozen=True)
class Entry:
    """One key folder of the cache."""

    path: Path
    complete: bool
    used: float  # when it was last used: its marker's mtime (0 when incomplete)
    nbytes: int


def entries(cache_dir: Path) -> list[Entry]:
    """The key folders in cache_dir (none when it does not exist)."""
    found = []
    try:
        folders = [p for p in Path(cache_dir).iterdir() if KEY.fullmatch(p.name) and p.is_dir()]
    except OSError:
        return []
    for folder in folders:
        try:
            files = [p.stat() for p in folder.iterdir() if p.is_file()]
            marker = (folder / MARKER).stat().st_mtime if (folder / MARKER).is_file() else None
        except OSError:
            continue  # removed meanwhile by another run
        found.append(Entry(folder, marker is not None, marker or 0.0, sum(s.st_size for s in files)))
    return found


def sweep(cache_dir: Path, log: Callable[[str], None] | None = None) -> None:
    """Remove the incomplete entries no live process holds: leftovers of builds that were killed."""
    for entry in entries(cache_dir):
        if not entry.complete:
            _remove(entry, "left by a killed build", log)


def evict(cache_dir: Path, max_bytes: int, log: Callable[[str], None] | None = None) -> None:
    """Remove complete entries, least recently used first, until all entries hold at most ``max_bytes``;
    one that a process holds (uses or builds) stays."""
    found = entries(cache_dir)
    total = sum(e.nbytes for e in found)
    for entry in sorted((e for e in found if e.complete), key=lambda e: e.used):
        if total <= max_bytes:
            return
        if _remove(entry, f"least recently used, the cache is over {max_bytes / 1e9:g} GB", log):
            total -= entry.nbytes


def _remove(entry: Entry, why: str, log: Callable[[str], None] | None) -> bool:
    """Remove entry if no process holds it and it is still as found (marker first: readers see it gone)."""
    lock = FileLock(entry.path, directory=True)
    if not lock.try_take(exclusive=True):
        return False
    try:
        if (entry.path / MARKER).is_file() != entry.complete:
            return False  # completed or invalidated since it was listed
        (entry.path / MARKER).unlink(missing_ok=True)
        shutil.rmtree(entry.path, ignore_errors=True)
    finally:
        lock.release()
    if log is not None:
        log(f"image cache: removed {entry.path.name[:12]}... ({entry.nbytes / 1e9:.2f} GB, {why})")
    return True
