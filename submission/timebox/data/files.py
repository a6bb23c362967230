"""Walking dataset folders: image extensions, hidden files, deterministic order."""

from __future__ import annotations

import os
import re
from pathlib import Path

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})


def is_image(path: Path) -> bool:
    """True when the file name has an image extension (case-insensitive)."""
    return path.suffix.lower() in IMAGE_EXTENSIONS


def is_hidden(path: Path) -> bool:
    """True for dot-files such as .DS_Store or ._img_1.jpg."""
    return path.name.startswith(".")


def walk_files(folder: Path) -> list[Path]:
    """Every regular, non-hidden file under folder (recursive, hidden folders skipped), unsorted."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            path = Path(dirpath, name)
            if not name.startswith(".") and path.is_file():
                found.append(path)
    return found


def natural_key(path: Path, root: Path) -> tuple[list[str | int], str]:
    """Sort key on the path below root with digit runs compared as numbers (img_2 < img_10)."""
    text = Path(os.path.relpath(path, root)).as_posix()
    parts: list[str | int] = [int(p) if i % 2 else p for i, p in enumerate(re.split(r"([0-9]+)", text))]
    return parts, text


def sorted_paths(paths: list[Path], root: Path) -> list[Path]:
    """Paths in natural order of their location below root."""
    return sorted(paths, key=lambda p: natural_key(p, root))
