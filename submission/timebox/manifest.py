"""The manifest check of an unpacked submission: every file ``MANIFEST.json`` lists is there, at its size (and
sha256: every code file at start-up, every file when ``full``), and no unlisted file sits where Python would
import it. Standard library only: ``python -m timebox`` runs it before importing anything else of timebox, so an
altered module never runs (see :mod:`timebox.package`, which writes the manifest).

Example::

    check_unpacked()            # at start-up: nothing in a source tree, a UsageError naming the file otherwise
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import json
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from .errors import UsageError

ROOT = Path(__file__).resolve().parents[2]  # the tree holding run.sh and submission/
MANIFEST = "MANIFEST.json"
MARKER = ".timebox-package"  # the zip's first entry: a tree holding it is a packaged copy, checked at every start
MANIFEST_MAX_BYTES = 16_000_000  # a manifest lists a few hundred files; a larger one is not a timebox manifest
BYTECODE = (".pyc", ".pyo")  # never shipped: Python would prefer a stale one to its source
REPACKAGE = "upload the zip again, or re-package it with `./run.sh package`"


@dataclass(frozen=True)
class ManifestEntry:
    """One shipped file: its path in the zip, size in bytes and sha256 (hex)."""

    path: str
    size: int
    sha256: str


def verify_manifest(root: Path, full: bool = True) -> int:
    """Check the files ``root/MANIFEST.json`` lists: sizes always, sha256 of all (``full``) or of code files only.
    Returns the number of files checked; a missing, truncated or altered file is a UsageError naming it."""
    root = Path(root)
    entries = _manifest_entries(root)
    for entry in entries:
        _verify_entry(root, entry, full)
    _refuse_unlisted(root, {entry.path for entry in entries})
    return len(entries)


def _verify_entry(root: Path, entry: ManifestEntry, full: bool) -> None:
    path = root.joinpath(*PurePosixPath(entry.path).parts)
    try:
        size = path.stat().st_size
    except OSError:
        raise UsageError(f"{path}: missing from the unpacked submission; {REPACKAGE}") from None
    if size != entry.size:
        raise UsageError(f"{path}: {size} bytes, but the manifest says {entry.size} (truncated or altered); "
                         f"{REPACKAGE}")
    if (full or _is_code(entry.path)) and _sha256(path) != entry.sha256:
        raise UsageError(f"{path}: its content differs from the manifest (sha256); the file was altered "
                         f"after packaging: {REPACKAGE}")


def _refuse_unlisted(root: Path, listed: set[str]) -> None:
    """Refuse files the manifest does not list: any under ``submission/`` (the code's folder, on PYTHONPATH) and
    any importable one at the top (the entry's working folder, first on sys.path); outputs beside them may stay."""
    unlisted = [rel for rel in _files_under(root, "submission") if rel not in listed]
    unlisted += [p.name for p in sorted(root.iterdir()) if p.name not in listed and _importable(p)]
    if not unlisted:
        return
    shown = ", ".join(unlisted[:5]) + (f" and {len(unlisted) - 5} more" if len(unlisted) > 5 else "")
    bytecode = any("__pycache__" in rel or rel.endswith(BYTECODE) for rel in unlisted)
    hint = (" Bytecode never ships: start the submission with run.sh, which keeps it out of the tree "
            "(PYTHONPYCACHEPREFIX), and delete the __pycache__ folders." if bytecode else "")
    raise UsageError(f"{root}: {shown}: not in the manifest (left over or added after packaging, and the "
                     f"submission would read it); delete it, or {REPACKAGE}.{hint}")


def _files_under(root: Path, top: str) -> list[str]:
    """Paths (relative to ``root``) of the files and links under ``root/top``."""
    found = []
    for folder, dirs, files in os.walk(root / top):
        base = Path(folder)
        links = [d for d in dirs if (base / d).is_symlink()]  # not walked into, but an import would follow them
        found += [(base / name).relative_to(root).as_posix() for name in files + links]
    return sorted(found)


def _importable(path: Path) -> bool:
    """A module or package that ``import`` would find in ``path``'s folder."""
    suffixes = importlib.machinery.all_suffixes()
    if path.is_dir():
        return any((path / f"__init__{suffix}").exists() for suffix in suffixes)
    return path.name.endswith(tuple(suffixes))


def check_unpacked(root: Path = ROOT) -> None:
    """At start-up of an unpacked submission (one holding the marker or ``MANIFEST.json``): the cheap
    :func:`verify_manifest`."""
    root = Path(root)
    if (root / MARKER).is_file() or (root / MANIFEST).is_file():
        verify_manifest(root, full=False)


def _manifest_entries(root: Path) -> list[ManifestEntry]:
    path = root / MANIFEST
    if not path.exists() and (root / MARKER).exists():
        raise UsageError(f"{path}: missing, yet {root / MARKER} marks a packaged copy: the unpack was cut off "
                         "before its last entry; unzip the submission again, completely")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, ValueError) as exc:
        raise UsageError(f"{path}: unreadable manifest ({exc}); {REPACKAGE}") from None
    return parse_manifest(text, str(path))


def parse_manifest(text: str, where: str) -> list[ManifestEntry]:
    """The entries of a manifest's text; a UsageError naming ``where`` if it is malformed or leaves the tree."""
    try:
        entries = [ManifestEntry(str(e["path"]), int(e["size"]), str(e["sha256"])) for e in json.loads(text)["files"]]
    except (ValueError, KeyError, TypeError) as exc:
        raise UsageError(f"{where}: unreadable manifest ({exc}); {REPACKAGE}") from None
    bad = [e.path for e in entries if PurePosixPath(e.path).is_absolute() or ".." in e.path.split("/")]
    if bad:
        raise UsageError(f"{where}: lists {bad[0]!r}, outside the submission; {REPACKAGE}")
    return entries


def _is_code(name: str) -> bool:
    return name.endswith(".py") or name in ("run.sh", "requirements.txt", "submission/config.json")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
