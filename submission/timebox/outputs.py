"""The one owner of a run's outputs: ``OUT/predictions.csv``, ``OUT/model/``, the judge's export, and the
record of what the output is (its val accuracy and source, kept in ``OUT/state/`` for a resumed run).

Phases offer predictions; only :class:`Outputs` writes them, one writer at a time (the watchdog's thread writes
too). As soon as the test files are listed, :meth:`Outputs.ensure_exists` writes the prior class for every file.
Each write is recorded in the state with its bytes' digest: a resumed run keeps only the file its own run wrote.

Example::

    outputs = Outputs(out, names, labels, state, judge="generic")
    outputs.adopt(test_probs, usable, OutputRecord(0.91, "finetune epoch 4"))
"""

from __future__ import annotations

import hashlib
import os
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from .export import export_for_judge, judge_dir
from .export.judge_input import FLINK_TEMPLATE
from .predict import LABELS_FILE, MODEL_FILE, LabelMap, prediction_rows, write_predictions
from .recovery import RunState

EARLY_SOURCE = "the early head"  # the early output's source, as the outputs, the log and the record name it
RECORD = "best"  # the state record of what the output is
WRITTEN = "predictions"  # the state record of the last predictions.csv written: its source and its bytes' digest


@dataclass
class OutputRecord:
    """What ``predictions.csv`` holds: its val accuracy (-1: none yet, or the early output, provisional) and source;
    ``final``: no later model of this run replaces it; ``refit``: it trained on the val images, and
    ``val_accuracy`` is that of the output it replaced; ``exported``: ``OUT/model`` holds it (an ensemble);
    ``checkpoint``: the file in ``OUT/checkpoints/`` with its weights (None: a final output's are in memory)."""

    val_accuracy: float = -1.0
    source: str | None = None
    final: bool = False
    refit: bool = False
    exported: bool = False
    checkpoint: str | None = None


class Outputs:
    """``OUT/predictions.csv``, ``OUT/model/`` and the judge export of one run, and the record of what they are."""

    def __init__(self, out: Path, names: list[str], labels: LabelMap, state: RunState, judge: str = "generic",
                 judge_folder: Path | None = None, log: Callable[[str], None] = print,
                 judge_input: str = FLINK_TEMPLATE):
        self.out, self.names, self.labels, self.state = Path(out), names, labels, state
        self.path = self.out / "predictions.csv"
        self.judge, self.judge_folder, self.judge_input, self.log = judge, judge_folder, judge_input, log
        self._lock = threading.RLock()
        self.written_by: str | None = self._recorded_source()  # None: no file of this run's yet
        saved = state.read(RECORD, load_arrays=False) if self.written_by else None
        self.record = OutputRecord(**saved["info"]) if saved else OutputRecord()

    def _recorded_source(self) -> str | None:
        """The source of ``predictions.csv`` if this run's state recorded writing it as it is, else None."""
        saved = self.state.read(WRITTEN, load_arrays=False)
        if saved is None or not self.path.is_file():
            return None
        return saved["info"]["source"] if _digest(self.path) == saved["info"]["sha256"] else None

    def _replace(self, rows: list[tuple], source: str) -> None:
        """``predictions.csv`` replaced by ``rows``, then recorded as this run's (the lock held)."""
        write_predictions(self.path, rows)
        self.state.write(WRITTEN, {"source": source, "sha256": _digest(self.path)})
        self.written_by = source

    def write(self, probs: np.ndarray, usable: np.ndarray, source: str) -> None:
        """Predictions from ``probs`` (one row per test file) that change no record (the early head's)."""
        with self._lock:
            self._replace(prediction_rows(self.names, probs, usable, self.labels), source)

    def adopt(self, test_probs: np.ndarray, usable: np.ndarray, record: OutputRecord) -> None:
        """The model of ``record`` becomes the output: its ``test_probs`` (the first rows; the rest get the prior)
        are written, then the record, so a resumed run knows what the output is."""
        probs = np.zeros((len(self.names), len(self.labels.class_ids)), np.float32)
        if len(test_probs):  # none without test files
            probs[: len(test_probs)] = test_probs
        with self._lock:
            self.write(probs, usable, record.source)
            self.record = record
            self.state.write(RECORD, asdict(record))

    def stands(self, record: OutputRecord) -> None:
        """The predictions written are those of ``record`` (the early head's, when it is the head)."""
        with self._lock:
            self.record = record
            self.state.write(RECORD, asdict(record))

    def improves(self, val_accuracy: float) -> bool:
        return val_accuracy > self.record.val_accuracy

    def ensure_exists(self) -> None:
        """The prior class for every file, if this run wrote nothing yet (a previous run's file is replaced)."""
        with self._lock:
            if self.written_by is None:
                n = len(self.names)
                self._replace(prediction_rows(self.names, np.zeros((n, len(self.labels.class_ids))),
                                              np.zeros(n, bool), self.labels), "prior")

    def export(self, model, val_accuracy: float | None = None) -> None:
        """``OUT/model/`` (the uint8-image classifier ``model`` and its labels, each file replaced atomically), and
        the judge's export of it (replaced atomically as a whole), which reports ``val_accuracy`` (default: the
        output's)."""
        model_dir = self.out / "model"
        model_dir.mkdir(exist_ok=True)
        tmp = model_dir / f".tmp-{os.getpid()}-{MODEL_FILE}"
        model.save(tmp)
        os.replace(tmp, model_dir / MODEL_FILE)
        self.labels.save(model_dir / LABELS_FILE)
        dest = self.judge_folder or judge_dir(self.judge, self.out)
        accuracy = self.record.val_accuracy if val_accuracy is None else val_accuracy
        written = export_for_judge(self.judge, model_dir, dest, accuracy, self.judge_input)
        if written is not None:
            self.log(f"{self.judge} export: {written}")


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
