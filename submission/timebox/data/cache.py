"""Decode every image once into an on-disk uint8 array, reused across runs.

Layout of cache_dir/<key>/: images.u8 (raw (N, size, size, 3) uint8), errors.json (per-file decode error
or null) and `complete`, written last. A directory without a valid `complete` marker (a build that was
killed) is rebuilt from scratch. Workers are spawned, never forked: the parent may hold TensorFlow.
Two processes building the same key at the same time are not supported.
"""

from __future__ import annotations

import errno
import hashlib
import json
import multiprocessing
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import PIL

from timebox.data.decode import decode_image
from timebox.errors import UsageError
from timebox.fileio import atomic_write_text

FORMAT_VERSION = 1
CHUNK = 64
IMAGES, ERRORS, MARKER = "images.u8", "errors.json", "complete"


@dataclass
class ImageCache:
    """Decoded images (read-only memmap), per-file decode errors, and the cache directory."""

    images: np.memmap
    errors: list[str | None]
    path: Path


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
) -> ImageCache:
    """Decoded images of files at size x size, from cache_dir when already built, else decoded in parallel."""
    if not files:
        return ImageCache(np.zeros((0, size, size, 3), np.uint8), [], Path(cache_dir))
    if workers is not None and workers < 1:
        raise UsageError(f"the number of decode workers must be at least 1, got {workers}")
    key_dir = Path(cache_dir) / cache_key(files, size)
    shape = (len(files), size, size, 3)
    cached = _load(key_dir, shape)
    if cached is not None:
        if progress is not None:
            progress(len(files), len(files))
        return cached
    errors = _build(files, size, key_dir, shape, workers or os.cpu_count() or 1, progress)
    return ImageCache(np.memmap(key_dir / IMAGES, dtype=np.uint8, mode="r", shape=shape), errors, key_dir)


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
) -> list[str | None]:
    """Decode into a temporary images file, then publish images, errors and marker (marker last)."""
    partial = key_dir / f"{IMAGES}.partial"
    nbytes = int(np.prod(shape))
    try:
        key_dir.mkdir(parents=True, exist_ok=True)
        (key_dir / MARKER).unlink(missing_ok=True)
        with open(partial, "wb") as handle:
            _allocate(handle.fileno(), nbytes)
    except OSError as exc:
        raise UsageError(
            f"cannot write the image cache in {key_dir} ({exc.strerror or exc}); "
            f"choose a writable cache directory with {nbytes / 1e9:.1f} GB free"
        ) from exc
    errors: list[str | None] = [None] * len(files)
    done = 0
    if progress is not None:
        progress(0, len(files))
    try:
        for start, chunk_errors in _decode_chunks(files, size, partial, shape, workers):
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
    files: list[Path], size: int, images_path: Path, shape: tuple[int, ...], workers: int
) -> Iterator[tuple[int, list[str | None]]]:
    """Yield (start, errors) per chunk of CHUNK files as chunks finish, in-process when workers == 1."""
    jobs = [
        (str(images_path), shape, size, start, [str(f) for f in files[start : start + CHUNK]])
        for start in range(0, len(files), CHUNK)
    ]
    workers = min(workers, len(jobs))
    if workers == 1:
        yield from (_decode_chunk(*job) for job in jobs)
        return
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
    try:
        futures = [pool.submit(_decode_chunk, *job) for job in jobs]
        for future in as_completed(futures):
            yield future.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


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
        rows[i] = 0 if decoded.image is None else decoded.image
        errors.append(decoded.error)
    rows.flush()
    del rows
    return start, errors
