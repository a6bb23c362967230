"""Decode every image once into an on-disk uint8 array, reused across runs.

Layout of cache_dir/<key>/: images.u8 (raw (N, size, size, 3) uint8), errors.json (per-file decode error
or null) and `complete`, written last. A directory without a valid `complete` marker (a build that was
killed) is rebuilt from scratch. Workers are spawned, never forked: the parent may hold TensorFlow.

Runs may share cache_dir: each holds a shared flock on the key folders it uses, so no run evicts what another
uses (see :mod:`timebox.data.eviction`), and builds under the key's exclusive `building` lock (a file its holder
removes), so a second run wanting the same key waits for the first's build (saying so) and then reuses it.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import PIL

from timebox.data.decode import TRUNCATED, decode_image, decode_truncated
from timebox.data.eviction import MARKER, evict, sweep
from timebox.data.workers import Stopped, run_jobs, usable_cpus
from timebox.errors import UsageError
from timebox.fileio import atomic_write_text
from timebox.filelock import FileLock, WaitStopped

FORMAT_VERSION = 2  # 2: strip-reduced decoding, truncated test files decoded (data/decode.py)
CHUNK = 64
IMAGES, ERRORS, BUILDING = "images.u8", "errors.json", "building"


@dataclass
class ImageCache:
    """Decoded images (read-only memmap), per-file decode errors, and the cache directory."""

    images: np.memmap
    errors: list[str | None]
    path: Path
    lock: FileLock | None = None  # a shared lock on path while this is in use: no run evicts it meanwhile


def cache_key(files: Sequence[Path], size: int) -> str:
    """sha256 over format version, Pillow version, size and (resolved path, size, mtime_ns) of every file."""
    digest = hashlib.sha256(f"timebox image cache v{FORMAT_VERSION} pillow {PIL.__version__} size {size}\n".encode())
    for file in files:
        path = Path(file).resolve()
        try:
            stat = path.stat()
            stamp = f"{stat.st_size} {stat.st_mtime_ns}"
        except OSError:
            stamp = "missing"
        digest.update(f"{path}\0{stamp}\n".encode("utf-8", "surrogateescape"))
    return digest.hexdigest()


def build_cache(
    files: list[Path],
    size: int,
    cache_dir: Path,
    workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    max_gb: float | None = None,
    log: Callable[[str], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> ImageCache:
    """Decoded images of files at size x size, from cache_dir when already built (by any run), else decoded in
    parallel. A run waits while another builds the same key (told to ``log``). A build first sweeps the leftovers
    of killed builds, and after it the least recently used entries go until cache_dir holds at most ``max_gb``
    (None: no cap).
    Raises :class:`~timebox.data.workers.Stopped`, publishing nothing, once ``should_stop()`` is true mid-build.
    """
    if not files:
        return ImageCache(np.zeros((0, size, size, 3), np.uint8), [], Path(cache_dir))
    if workers is not None and workers < 1:
        raise UsageError(f"the number of decode workers must be at least 1, got {workers}")
    key_dir = Path(cache_dir) / cache_key(files, size)
    shape = (len(files), size, size, 3)
    use = FileLock(key_dir, directory=True)
    try:
        use.take(exclusive=False)  # held while this run uses the entry: no other run removes it meanwhile
    except OSError as exc:
        raise _unwritable(key_dir, exc, shape) from exc
    cached = _load(key_dir, shape)
    if cached is None:
        sweep(Path(cache_dir), log)
        cached = _build_once(files, size, key_dir, shape, workers or usable_cpus(), progress, log, should_stop)
        if max_gb is not None:
            evict(Path(cache_dir), int(max_gb * 1e9), log)
    elif progress is not None:
        progress(len(files), len(files))
    _mark_used(key_dir)
    cached.lock = use
    return cached


def _build_once(
    files: list[Path],
    size: int,
    key_dir: Path,
    shape: tuple[int, ...],
    workers: int,
    progress: Callable[[int, int], None] | None,
    log: Callable[[str], None] | None,
    should_stop: Callable[[], bool] | None,
) -> ImageCache:
    """The entry built under key_dir's build lock, or found built by the run this one waited for."""
    building = FileLock(key_dir / BUILDING)
    wait = None if log is None else lambda _: log(f"image cache: waiting for another run building {key_dir}")
    try:
        building.take(exclusive=True, on_wait=wait, should_stop=should_stop)
    except OSError as exc:
        raise _unwritable(key_dir, exc, shape) from exc
    except WaitStopped:
        raise Stopped(f"stopped while another run built {key_dir}") from None
    try:
        cached = _load(key_dir, shape)  # re-check: the run waited for may have built it
        if cached is None:
            errors = _build(files, size, key_dir, shape, workers, progress, should_stop)
            cached = ImageCache(np.memmap(key_dir / IMAGES, dtype=np.uint8, mode="r", shape=shape), errors, key_dir)
    finally:
        (key_dir / BUILDING).unlink(missing_ok=True)  # its holder removes it: a finished key holds only the entry
        building.release()
    return cached


def _unwritable(key_dir: Path, exc: OSError, shape: tuple[int, ...]) -> UsageError:
    return UsageError(
        f"cannot write the image cache in {key_dir} ({exc.strerror or exc}); "
        f"choose a writable cache directory with {int(np.prod(shape)) / 1e9:.1f} GB free"
    )


def _mark_used(key_dir: Path) -> None:
    """Date the entry's last use (its marker's mtime orders eviction); a read-only cache is still served."""
    try:
        os.utime(key_dir / MARKER)
    except OSError:
        pass


def _expected_marker(shape: tuple[int, ...]) -> dict[str, int]:
    return {"version": FORMAT_VERSION, "count": shape[0], "size": shape[1]}


def _load(key_dir: Path, shape: tuple[int, ...]) -> ImageCache | None:
    """The cache in key_dir if its marker says it is complete and matches shape, else None."""
    try:
        marker = json.loads((key_dir / MARKER).read_text(encoding="utf-8"))
        errors = json.loads((key_dir / ERRORS).read_text(encoding="utf-8"))
        if marker != _expected_marker(shape) or len(errors) != shape[0]:
            return None
        if (key_dir / IMAGES).stat().st_size != int(np.prod(shape)):
            return None
        images = np.memmap(key_dir / IMAGES, dtype=np.uint8, mode="r", shape=shape)
    except (OSError, ValueError):
        return None
    return ImageCache(images, errors, key_dir)


def _build(
    files: list[Path],
    size: int,
    key_dir: Path,
    shape: tuple[int, ...],
    workers: int,
    progress: Callable[[int, int], None] | None,
    should_stop: Callable[[], bool] | None = None,
) -> list[str | None]:
    """Decode into this process's temporary images file, then publish images, errors and marker (marker last).
    The caller holds key_dir's build lock."""
    partial = key_dir / f"{IMAGES}.partial-{os.getpid()}"
    try:
        _clear(key_dir)
        with open(partial, "wb") as handle:
            _allocate(handle.fileno(), int(np.prod(shape)))
    except OSError as exc:
        raise _unwritable(key_dir, exc, shape) from exc
    errors: list[str | None] = [None] * len(files)
    done = 0
    if progress is not None:
        progress(0, len(files))
    try:
        for start, chunk_errors in _decode_chunks(files, size, partial, shape, workers, should_stop):
            errors[start : start + len(chunk_errors)] = chunk_errors
            done += len(chunk_errors)
            if progress is not None:
                progress(done, len(files))
        os.replace(partial, key_dir / IMAGES)
    finally:
        partial.unlink(missing_ok=True)
    atomic_write_text(key_dir / ERRORS, json.dumps(errors))
    atomic_write_text(key_dir / MARKER, json.dumps(_expected_marker(shape)))
    return errors


def _clear(key_dir: Path) -> None:
    """Empty key_dir but its build lock, marker first: under that lock, the rest is an older or killed build's."""
    (key_dir / MARKER).unlink(missing_ok=True)
    for path in key_dir.iterdir():
        if path.is_file() and path.name != BUILDING:
            path.unlink()


def _allocate(fd: int, nbytes: int) -> None:
    """Size the file; reserve its blocks where possible so a full disk fails here, not mid-build."""
    os.ftruncate(fd, nbytes)
    if hasattr(os, "posix_fallocate"):
        try:
            os.posix_fallocate(fd, 0, nbytes)
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                raise


def _decode_chunks(
    files: list[Path], size: int, images_path: Path, shape: tuple[int, ...], workers: int,
    should_stop: Callable[[], bool] | None,
) -> Iterator[tuple[int, list[str | None]]]:
    """Yield (start, errors) per chunk of CHUNK files as chunks finish (see :func:`run_jobs`)."""
    jobs = [
        (str(images_path), shape, size, start, [str(f) for f in files[start : start + CHUNK]])
        for start in range(0, len(files), CHUNK)
    ]
    return run_jobs(_decode_chunk, jobs, workers, should_stop)


def _decode_chunk(
    images_path: str, shape: tuple[int, ...], size: int, start: int, paths: list[str]
) -> tuple[int, list[str | None]]:
    """Worker: decode paths into rows start.. of the images file; return (start, per-file errors)."""
    row_shape = tuple(shape[1:])
    rows = np.memmap(
        images_path, dtype=np.uint8, mode="r+", offset=start * int(np.prod(row_shape)), shape=(len(paths), *row_shape)
    )
    errors = []
    for i, path in enumerate(paths):
        decoded = decode_image(Path(path), size)
        if decoded.error == TRUNCATED:  # kept as PARTIAL: a test file is predicted from it, a training file quarantined
            decoded = decode_truncated(Path(path), size)
        rows[i] = 0 if decoded.image is None else decoded.image
        errors.append(decoded.error)
    rows.flush()
    del rows
    return start, errors
