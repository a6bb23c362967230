"""Atomic file writes: a reader (or a run killed mid-write) sees the old file or the new one, never half.

Files get the mode the umask allows (0644 under umask 022), so a judge running as another user reads them, and a
name Python read from disk as surrogate escapes (not UTF-8: archives from other systems) is written back as the
bytes it was."""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

_TRIES = 100  # temp names tried before giving up (each is random: a clash is all but impossible)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to a temp file beside ``path``, fsync it, then rename it over ``path``."""
    atomic_write_bytes(path, text.encode("utf-8", errors="surrogateescape"))


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to a temp file beside ``path``, fsync it, then rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _create_beside(path)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _create_beside(path: Path) -> tuple[int, Path]:
    """A new, empty temp file beside ``path``, created 0666 less the umask (the kernel applies it)."""
    for _ in range(_TRIES):
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"{path.parent}: no free temp name for {path.name} in {_TRIES} tries")


def atomic_write_json(path: str | Path, obj) -> None:
    """:func:`atomic_write_text` of ``obj`` as indented UTF-8 JSON."""
    atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False, default=_jsonable) + "\n")


def _jsonable(obj):
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot write {type(obj).__name__} as JSON")
