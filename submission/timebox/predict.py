"""Predictions: a CSV row for every test file (readable or not), and predicting with a saved model.

Example::

    rows = prediction_rows(names, probs, usable, labels)
    write_predictions(out / "predictions.csv", rows)
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .fileio import atomic_write_json, atomic_write_text

MODEL_FILE, LABELS_FILE = "model.keras", "labels.json"


@dataclass(frozen=True)
class LabelMap:
    """Contest ids and names of the internal classes, and the fallback class for unreadable files."""

    class_ids: list[int]
    class_names: list[str]
    prior_class: int  # internal index of the most frequent training class
    input_size: int
    backbone: str

    def save(self, path: Path) -> None:
        atomic_write_json(path, self.__dict__)

    @classmethod
    def load(cls, path: Path) -> "LabelMap":
        return cls(**json.loads(Path(path).read_text(encoding="utf-8")))


def prediction_rows(names: list[str], probs: np.ndarray, usable: np.ndarray, labels: LabelMap) -> list[tuple]:
    """(filename, label, name, confidence) per file; unusable files get the prior class, confidence 0."""
    rows = []
    for name, p, ok in zip(names, probs, usable):
        k = int(np.argmax(p)) if ok else labels.prior_class
        rows.append((name, labels.class_ids[k], labels.class_names[k], round(float(p[k]), 6) if ok else 0.0))
    return rows


def write_predictions(path: Path, rows: list[tuple]) -> None:
    """Write ``filename,label,name,confidence`` atomically."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["filename", "label", "name", "confidence"])
    writer.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def predict_batches(model, images: np.ndarray, batch_size: int = 32) -> np.ndarray:
    """Class probabilities of a uint8 image array, with fixed-size (padded) batches."""
    out = []
    for i in range(0, len(images), batch_size):
        batch = np.asarray(images[i : i + batch_size])
        n = len(batch)
        if n < batch_size:
            batch = np.concatenate([batch, np.zeros((batch_size - n, *batch.shape[1:]), batch.dtype)])
        out.append(np.asarray(model.predict_on_batch(batch))[:n])
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def predict_dir(model_dir: Path, images: Path, out_csv: Path, cache_dir: Path, max_gb: float | None = None) -> int:
    """Predict every file under ``images`` with a saved timebox model; returns the row count. The decoded-image
    cache keeps at most ``max_gb`` after a build (least recently used entries go first; None: no cap)."""
    from .data.cache import build_cache
    from .data.layouts import list_images
    from .data.unreadable import usable_test_files
    from .errors import UsageError
    from .models.features import image_batch_size
    from .models.registry import load_model

    model_dir = Path(model_dir)
    if not (model_dir / MODEL_FILE).is_file() or not (model_dir / LABELS_FILE).is_file():
        raise UsageError(f"{model_dir}: not a timebox model folder (needs {MODEL_FILE} and {LABELS_FILE}); "
                         "pass the model/ folder an `online` run wrote")
    labels = LabelMap.load(model_dir / LABELS_FILE)
    model = load_model(model_dir / MODEL_FILE)
    files = list_images(images)
    cache = build_cache(files, labels.input_size, cache_dir, max_gb=max_gb)
    usable = usable_test_files(cache.errors)
    probs = predict_batches(model, cache.images, image_batch_size())
    root = Path(images).resolve()
    names = [f.relative_to(root).as_posix() for f in files]
    write_predictions(out_csv, prediction_rows(names, probs, usable, labels))
    return len(files)
