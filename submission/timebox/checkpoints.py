"""Keep the top-k checkpoints by val accuracy (ties: lower val loss), with an atomic manifest.

Checkpoint files are written to a temporary name and renamed into place, and the manifest
(``manifest.json``) is replaced atomically after every change, so a run killed at any instant
leaves a loadable manifest that points only at complete files. Entries already in a manifest
(from an earlier, interrupted run) keep their rank: a worse model never replaces the best. The file named by
``protected`` (the output's weights) is kept even when it falls out of the top k.

Example::

    manager = CheckpointManager(out / "checkpoints", k=3)
    manager.consider(lambda p: model.save_weights(p), model="lite0", phase="head", epoch=7,
                     step=420, val_accuracy=0.91, val_loss=0.31)
    manager.best()["path"]
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Callable

import psutil

from .fileio import atomic_write_json

MANIFEST = "manifest.json"


def _rank(entry: dict) -> tuple[float, float]:
    return (-entry["val_accuracy"], entry["val_loss"])


class CheckpointManager:
    """Top-k checkpoint files in ``folder`` and their manifest."""

    def __init__(self, folder: str | Path, k: int = 3, suffix: str = ".weights.h5"):
        self.folder, self.k, self.suffix = Path(folder), k, suffix
        self.folder.mkdir(parents=True, exist_ok=True)
        self.protected: str | None = None  # a file kept beyond the top k (the output's)
        self.entries: list[dict] = self._load()
        self._last_size = max((e.get("bytes", 0) for e in self.entries), default=0)

    def _load(self) -> list[dict]:
        path = self.folder / MANIFEST
        if not path.exists():
            return []
        entries = json.loads(path.read_text(encoding="utf-8"))["checkpoints"]
        return [e for e in entries if (self.folder / e["file"]).exists()]

    def would_keep(self, val_accuracy: float, val_loss: float) -> bool:
        """True if a checkpoint with these scores would enter the top k."""
        if len(self.entries) < self.k:
            return True
        return _rank({"val_accuracy": val_accuracy, "val_loss": val_loss}) < _rank(self.entries[self.k - 1])

    def consider(self, save: Callable[[Path], None], *, model: str, phase: str, epoch: int, step: int,
                 val_accuracy: float, val_loss: float) -> Path | None:
        """Save through ``save(path)`` if these scores enter the top k; returns the file or None."""
        if not self.would_keep(val_accuracy, val_loss):
            return None
        if not self._make_room(val_accuracy, val_loss):
            return None
        name = f"{model}-{phase}-e{epoch:04d}-s{step:07d}{self.suffix}"
        final = self.folder / name
        tmp = self.folder / f".tmp-{os.getpid()}-{name}"
        try:
            save(tmp)
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
            os.replace(tmp, final)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        self._last_size = final.stat().st_size
        entry = {"file": name, "model": model, "phase": phase, "epoch": epoch, "step": step,
                 "val_accuracy": float(val_accuracy), "val_loss": float(val_loss), "time": time.time(),
                 "bytes": self._last_size}
        self.entries = sorted([e for e in self.entries if e["file"] != name] + [entry], key=_rank)
        dropped = [e for e in self.entries[self.k :] if e["file"] != self.protected]
        self.entries = [e for e in self.entries if e not in dropped]
        self._write_manifest()
        for e in dropped:
            (self.folder / e["file"]).unlink(missing_ok=True)
        return final

    def _make_room(self, val_accuracy: float, val_loss: float) -> bool:
        """Check free disk for one more file; drop checkpoints worse than the new one rather than
        fail, never a better one (False if no room can be made that way)."""
        need = 2 * self._last_size + (16 << 20)
        new = _rank({"val_accuracy": val_accuracy, "val_loss": val_loss})
        while psutil.disk_usage(str(self.folder)).free < need:
            droppable = [e for e in self.entries if e["file"] != self.protected]
            if not droppable or _rank(droppable[-1]) <= new:
                return False
            worst = droppable[-1]
            self.entries.remove(worst)
            (self.folder / worst["file"]).unlink(missing_ok=True)
            self._write_manifest()
        return True

    def _write_manifest(self) -> None:
        atomic_write_json(self.folder / MANIFEST, {"checkpoints": self.entries})

    def path(self, name: str) -> Path | None:
        """The kept file ``name``, or None if it is not kept."""
        return self.folder / name if any(e["file"] == name for e in self.entries) else None

    def best(self) -> dict | None:
        """The best entry, with ``path`` filled in, or None."""
        return {**self.entries[0], "path": str(self.folder / self.entries[0]["file"])} if self.entries else None
