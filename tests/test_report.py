"""The report's timeline chart: every scored model's val accuracy over time, the kept checkpoints marked."""

import numpy as np
from PIL import Image

from timebox.report import timeline_png

ORANGE = np.array([255, 140, 0])  # PIL's "darkorange": a kept checkpoint
PHASES = [{"phase": "head", "start_s": 0.0, "planned_s": 40.0, "actual_s": 35.0},
          {"phase": "finetune", "start_s": 35.0, "planned_s": 60.0, "actual_s": 60.0}]


def _score(t: float, phase: str, epoch: int, acc: float) -> dict:
    return {"time": 1000.0 + t, "phase": phase, "epoch": epoch, "val_accuracy": acc}


def _orange_rows(path) -> np.ndarray:
    """Row index of every kept-checkpoint pixel, in the accuracy panel (the bottom 160 px)."""
    px = np.asarray(Image.open(path).convert("RGB")).astype(int)
    rows, _ = np.nonzero((np.abs(px - ORANGE).sum(2) == 0))
    return rows[rows > px.shape[0] - 160]


def test_kept_checkpoints_are_marked_and_the_accuracy_axis_spans_the_scores(tmp_path):
    scores = [_score(10, "head", 50, 0.90), _score(50, "finetune", 1, 0.88), _score(90, "finetune", 2, 0.92)]
    kept = [{**scores[0], "file": "a"}, {**scores[2], "file": "b"}]
    path = tmp_path / "timeline.png"
    timeline_png(path, 100.0, PHASES, scores, kept, start=1000.0)
    rows = _orange_rows(path)
    # two kept dots, 0.90 and 0.92: on a 0..1 axis they would be 2-3 px apart; on the scores' span, far apart
    assert rows.max() - rows.min() >= 20


def test_an_earlier_sessions_kept_checkpoint_is_drawn_and_unkept_scores_are_not_orange(tmp_path):
    earlier = {"time": 1005.0, "phase": "finetune", "epoch": 3, "val_accuracy": 0.91, "file": "c"}
    path = tmp_path / "timeline.png"
    timeline_png(path, 100.0, PHASES, [_score(50, "finetune", 4, 0.85)], [earlier], start=1000.0)
    assert len(_orange_rows(path)) > 0
    timeline_png(path, 100.0, PHASES, [_score(50, "finetune", 4, 0.85)], [], start=1000.0)
    assert len(_orange_rows(path)) == 0
