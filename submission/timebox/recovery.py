"""``OUT/state/``: what ``online --resume`` needs to continue a run that was killed.

Each record is a JSON file (the marker) plus the weights and arrays it names, written under a
new generation number and only then pointed to by the atomically replaced JSON, so a run killed
at any instant leaves the previous complete record: a resumed run loses at most the phase or
fine-tune epoch it was in. ``run.json`` holds the arguments that must not change between
sessions and when each session started; each session touches its own heartbeat file every
second from its first moments on (before TensorFlow is imported), which dates its death, so the
budget every earlier session spent is known. A session holds ``.lock`` (flock) from its begin to
its close: a second one (a resume started while the first still finishes) is refused.

This module imports no TensorFlow: the command line starts a session before loading it.

Example::

    state = RunState(out / "state")
    spent_s = state.begin({"budget_s": 480, "seed": 0}, resume=True, start=budget_start)
    state.write("head", {"epochs": 40}, weights=head)
    state.read("head")["weights"]       # path of the saved weights
    state.close()
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .errors import UsageError
from .fileio import atomic_write_json

if TYPE_CHECKING:
    import keras

RUN = "run"
HEARTBEAT_S = 1.0
LOCK = ".lock"  # held by the session writing the folder; never cleared with the rest


class RunState:
    """Named records (JSON + weights + arrays) in ``folder``, each replaced atomically."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.start, self.spent_s = 0.0, 0.0  # this session's start and the budget earlier ones spent
        self._stop = threading.Event()
        self._lock_fd: int | None = None

    def begin(self, identity: dict, resume: bool, start: float) -> float:
        """Start a session (and its heartbeat); returns the seconds of budget earlier sessions spent.

        A new run (or ``resume`` with no state) clears the folder and has spent nothing.
        Resuming with other ``identity`` values (data, backbone, budget...) than the run had is a
        :class:`UsageError`, and so is a folder another session still holds.
        """
        self._lock()
        try:
            starts = self._earlier_starts(identity, resume)
        except BaseException:
            self.close()
            raise
        spent = sum(self._last_seen(i, s) - s for i, s in enumerate(starts))
        self.start, self.spent_s = start, spent
        self.write(RUN, {"identity": identity, "session_starts": starts + [start]})
        beat = self.folder / f"heartbeat-{len(starts)}"
        beat.touch()
        self._stop = threading.Event()
        threading.Thread(target=self._beat, args=(beat,), name="timebox-heartbeat", daemon=True).start()
        return spent

    def _earlier_starts(self, identity: dict, resume: bool) -> list[float]:
        """The starts of the earlier sessions of a resumed run; none (the folder cleared) for a new run."""
        run = self.read(RUN) if resume else None
        if run is None:
            self._clear()
            return []
        changed = [k for k, v in identity.items() if run["info"]["identity"].get(k) != v]
        if changed:
            was = ", ".join(f"{k}={run['info']['identity'].get(k)!r}" for k in changed)
            raise UsageError(f"{self.folder}: --resume with other arguments or data than the interrupted run ({was}); "
                             "resume with the same arguments and data, or leave out --resume to start again")
        return run["info"]["session_starts"]

    def _lock(self) -> None:
        """Hold ``.lock`` until :meth:`close` (the kernel lets go if the process dies); UsageError if held."""
        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.folder / LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise UsageError(f"{self.folder.parent}: another run is still writing it ({self.folder / LOCK} is "
                             "locked); wait until it ends, or pass another --out") from None
        self._lock_fd = fd

    def _clear(self) -> None:
        """Every record of the folder removed, the lock kept."""
        for child in self.folder.iterdir():
            if child.name == LOCK:
                continue
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child, ignore_errors=True)
            else:
                child.unlink(missing_ok=True)

    def _last_seen(self, session: int, start: float) -> float:
        """When session ``session`` was last alive, plus one heartbeat period of doubt."""
        beat = self.folder / f"heartbeat-{session}"
        return (beat.stat().st_mtime if beat.exists() else start) + HEARTBEAT_S

    def _beat(self, path: Path) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            path.touch()

    def close(self) -> None:
        """Stop this session's heartbeat and let go of the folder."""
        self._stop.set()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def write(self, name: str, info: dict, weights: keras.Model | None = None,
              arrays: dict[str, np.ndarray] | None = None) -> None:
        """Save ``info`` (JSON-able), the model's ``weights`` and ``arrays`` as record ``name``."""
        self.folder.mkdir(parents=True, exist_ok=True)
        old = self.read(name, load_arrays=False)
        gen = (old["generation"] + 1) if old else 1
        record = {"generation": gen, "info": info, "weights": None, "arrays": None}
        if weights is not None:
            record["weights"] = f"{name}-{gen}.weights.h5"
            weights.save_weights(str(self.folder / record["weights"]))
        if arrays is not None:
            record["arrays"] = f"{name}-{gen}.npz"
            with open(self.folder / record["arrays"], "wb") as f:
                np.savez(f, **arrays)
                f.flush()
                os.fsync(f.fileno())
        atomic_write_json(self.folder / f"{name}.json", record)
        for key in ("weights", "arrays"):
            if old and old[key]:
                (self.folder / old[key]).unlink(missing_ok=True)

    def read(self, name: str, load_arrays: bool = True) -> dict | None:
        """Record ``name`` or None: ``info``, ``weights`` (a path or None) and ``arrays`` (loaded, or
        their file's path when ``load_arrays`` is false)."""
        path = self.folder / f"{name}.json"
        if not path.exists():
            return None
        record = json.loads(path.read_text(encoding="utf-8"))
        for key in ("weights", "arrays"):
            if record[key]:
                record[key] = str(self.folder / record[key])
        if load_arrays and record["arrays"]:
            with np.load(record["arrays"]) as data:
                record["arrays"] = {k: data[k] for k in data.files}
        return record
