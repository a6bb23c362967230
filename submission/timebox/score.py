"""Score a predictions CSV against a labels CSV (both ``filename,label``): accuracy and per class."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .data.labelfiles import label_ids
from .errors import UsageError


@dataclass
class Score:
    accuracy: float
    correct: int
    total: int
    missing: int  # labelled files without a prediction row (counted wrong)
    per_class: dict[str, tuple[int, int]]  # label -> (correct, total)

    @property
    def macro_accuracy(self) -> float:
        return float(np.mean([ok / n for ok, n in self.per_class.values()])) if self.per_class else 0.0

    def lines(self, names: dict[str, str] | None = None) -> list[str]:
        """The accuracy, then each class's (named by ``names``, label -> class name, where given)."""
        out = [f"accuracy: {100 * self.accuracy:.2f}% ({self.correct}/{self.total}); macro accuracy (the mean of the "
               f"classes'): {100 * self.macro_accuracy:.2f}%"]
        if self.missing:
            out.append(f"missing predictions: {self.missing} (counted wrong)")
        for label, (ok, n) in sorted(self.per_class.items(), key=lambda kv: _sort_key(kv[0])):
            name = f"{label} ({names[label]})" if names and label in names else label
            out.append(f"  class {name}: {100 * ok / n:.2f}% ({ok}/{n})")
        return out


def _sort_key(label: str):
    return (0, int(label), "") if label.isdigit() else (1, 0, label)


def read_labels(path: Path) -> dict[str, str]:
    """filename -> label of a CSV with the columns filename,label (UTF-8, else GBK/GB18030); an integer-valued label
    ("1.0") reads as its id ("1"), and a file mixing ids and names is refused naming the line."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{path}: file not found")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:  # Chinese tools write GBK: GB18030 is its superset
        text = raw.decode("gb18030", errors="replace")
    reader = csv.DictReader(io.StringIO(text, newline=""))
    if not reader.fieldnames or not {"filename", "label"} <= set(reader.fieldnames):
        raise UsageError(f"{path}: line 1 must be a header with the columns filename,label")
    rows = [(reader.line_num, row["filename"].strip(), (row["label"] or "").strip()) for row in reader]
    labelled = [(lineno, label) for lineno, _, label in rows if label]
    ids = label_ids(path, labelled)
    as_id = {label: str(i) for (_, label), i in zip(labelled, ids)} if ids is not None else {}
    return {name: as_id.get(label, label) for _, name, label in rows}


def score(pred_csv: Path, labels_csv: Path) -> Score:
    """Compare predictions with labels, file by file."""
    pred, truth = read_labels(pred_csv), read_labels(labels_csv)
    if not truth:
        raise UsageError(f"{labels_csv}: no labelled rows")
    per_class: dict[str, list[int]] = {}
    for name, label in truth.items():
        stats = per_class.setdefault(label, [0, 0])
        stats[0] += pred.get(name) == label
        stats[1] += 1
    correct = sum(ok for ok, _ in per_class.values())
    return Score(correct / len(truth), correct, len(truth), sum(n not in pred for n in truth),
                 {k: (ok, n) for k, (ok, n) in per_class.items()})
