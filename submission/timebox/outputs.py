"""The one owner of a run's outputs: ``OUT/predictions.csv``, ``OUT/model/``, the judge's export, and the
record of what the output is (its val accuracy and source, kept in ``OUT/state/`` for a resumed run).

Phases offer predictions; only :class:`Outputs` writes them. Until a model's probabilities exist,
:meth:`Outputs.ensure_exists` writes the prior class for every file.

Example::

    outputs = Outputs(out, names, labels, state, judge="generic")
    outputs.adopt(test_probs, usable, OutputRecord(0.91, "finetune epoch 4"))
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from .export import export_for_judge, judge_dir
from .predict import LABELS_FILE, MODEL_FILE, LabelMap, prediction_rows, write_predictions
from .recovery import RunState

EARLY_SOURCE = "the early head"  # the early output's source, as the outputs, the log and the record name it
RECORD = "best"  # the state record of what the output is


@dataclass
class OutputRecord:
    """What ``predictions.csv`` holds: its val accuracy (-1: none yet, or the early output, provisional) and source;
    ``final``: no later model of this run replaces it; ``refit``: it trained on the val images, and
    ``val_accuracy`` is that of the output it replaced; ``exported``: ``OUT/model`` holds it (an ensemble)."""

    val_accuracy: float = -1.0
    source: str | None = None
    final: bool = False
    refit: bool = False
    exported: bool = False


class Outputs:
    """``OUT/predictions.csv``, ``OUT/model/`` and the judge export of one run, and the record of what they are."""

    def __init__(self, out: Path, names: list[str], labels: LabelMap, state: RunState, judge: str = "generic",
                 judge_folder: Path | None = None, log: Callable[[str], None] = print):
        self.out, self.names, self.labels, self.state = Path(out), names, labels, state
        self.path = self.out / "predictions.csv"
        self.judge, self.judge_folder, self.log = judge, judge_folder, log
        saved = state.read(RECORD, load_arrays=False)
        self.record = OutputRecord(**saved["info"]) if saved else OutputRecord()
        self.written_by: str | None = None
        if state.spent_s > 0 and self.path.exists():
            self.written_by = "an earlier session"

    def write(self, probs: np.ndarray, usable: np.ndarray, source: str) -> None:
        """Predictions from ``probs`` (one row per test file) that change no record: the prior, the early head."""
        write_predictions(self.path, prediction_rows(self.names, probs, usable, self.labels))
        self.written_by = source

    def adopt(self, test_probs: np.ndarray, usable: np.ndarray, record: OutputRecord) -> None:
        """The model of ``record`` becomes the output: its ``test_probs`` (the first rows; the rest get the prior)
        are written, then the record, so a resumed run knows what the output is."""
        probs = np.zeros((len(self.names), len(self.labels.class_ids)), np.float32)
        if len(test_probs):  # none without test files
            probs[: len(test_probs)] = test_probs
        self.write(probs, usable, record.source)
        self.record = record
        self.state.write(RECORD, asdict(record))

    def stands(self, record: OutputRecord) -> None:
        """The predictions written are those of ``record`` (the early head's, when it is the head)."""
        self.record = record
        self.state.write(RECORD, asdict(record))

    def improves(self, val_accuracy: float) -> bool:
        return val_accuracy > self.record.val_accuracy

    def ensure_exists(self) -> None:
        """The prior class for every file, if nothing was written yet."""
        if self.written_by is None:
            n = len(self.names)
            self.write(np.zeros((n, len(self.labels.class_ids))), np.zeros(n, bool), "prior")

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
        written = export_for_judge(self.judge, model_dir, dest, accuracy)
        if written is not None:
            self.log(f"{self.judge} export: {written}")
