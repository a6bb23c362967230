"""A folder of extracted activations shared by runs on the same images (``tune``'s trials), so a run that
differs only in what comes after the cut skips extraction.

An entry is keyed by the decoded-image cache entry the images come from, the indices, the view (mirrored
or not), the storage type and the exact model: a digest of its input and output shapes and every weight.
A hit is therefore the array that model would compute again. Only complete extractions are stored, with
the seconds they took, so a run that loads one still plans with the backbone's real speed.

Example::

    store = FeatureStore(Path("TUNE/cache/features"))
    key = store.key(bottom, cache.path.name, idx, flip=False, dtype=np.float16)
    hit = store.load(key)              # (values, seconds) or None
    if hit is None:
        store.save(key, values, seconds)
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path

import keras
import numpy as np

from ..fileio import atomic_write_bytes


class FeatureStore:
    """Complete extractions in ``folder``, one ``<key>.npz`` each (values and the seconds they took)."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self._digests: dict[int, tuple[keras.Model, str]] = {}  # id(model) -> (model kept alive, digest)

    def key(self, model: keras.Model, source: str, indices: np.ndarray, flip: bool, dtype: np.dtype) -> str:
        """The entry of ``model`` on images ``indices`` of the decoded-image cache entry named ``source``."""
        h = hashlib.sha256(f"{source}\0{self._digest(model)}\0{int(flip)}\0{np.dtype(dtype).str}\0".encode())
        h.update(np.ascontiguousarray(indices, dtype=np.int64).tobytes())
        return h.hexdigest()[:40]

    def load(self, key: str) -> tuple[np.ndarray, float] | None:
        """The stored values and the seconds their extraction took; None if absent or unreadable."""
        try:
            with np.load(self.folder / f"{key}.npz", allow_pickle=False) as f:
                return f["values"], float(f["seconds"])
        except (OSError, KeyError, ValueError, zipfile.BadZipFile):
            return None

    def seconds(self, key: str) -> float:
        """The seconds the entry's extraction took (read without its values); 0 if there is none."""
        try:
            with np.load(self.folder / f"{key}.npz", allow_pickle=False) as f:
                return float(f["seconds"])
        except (OSError, KeyError, ValueError, zipfile.BadZipFile):
            return 0.0

    def has(self, key: str) -> bool:
        """Whether an entry for ``key`` exists (:meth:`load` may still find it damaged)."""
        return (self.folder / f"{key}.npz").is_file()

    def save(self, key: str, values: np.ndarray, seconds: float) -> None:
        """Store a complete extraction (atomically: a reader sees the whole entry or none)."""
        buffer = io.BytesIO()
        np.savez(buffer, values=values, seconds=np.float64(seconds))
        atomic_write_bytes(self.folder / f"{key}.npz", buffer.getvalue())

    def _digest(self, model: keras.Model) -> str:
        known = self._digests.get(id(model))
        if known is not None and known[0] is model:
            return known[1]
        h = hashlib.sha256(f"{model.input_shape}\0{model.output_shape}\0".encode())
        for w in model.weights:
            h.update(np.ascontiguousarray(keras.ops.convert_to_numpy(w)).tobytes())
        self._digests[id(model)] = (model, h.hexdigest())
        return self._digests[id(model)][1]
