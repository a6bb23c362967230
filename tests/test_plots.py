"""The report's pictures (timebox.plots, matplotlib): kept checkpoints marked on the accuracy panel, whose axis spans
the scores; the confusion matrix and per-class pictures with the class names, Chinese names drawn by a CJK font."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from timebox.plots import confusion_png, per_class_png, timeline_png

ORANGE = np.array([255, 140, 0])  # matplotlib's "darkorange": a kept checkpoint
PHASES = [{"phase": "head", "start_s": 0.0, "planned_s": 40.0, "actual_s": 35.0},
          {"phase": "finetune", "start_s": 35.0, "planned_s": 60.0, "actual_s": 60.0}]
SERVICES = Path(__file__).resolve().parent / "services"


def _score(t: float, phase: str, epoch: int, acc: float) -> dict:
    return {"time": 1000.0 + t, "phase": phase, "epoch": epoch, "val_accuracy": acc}


def _orange_rows(path) -> np.ndarray:
    """Row index of every kept-checkpoint pixel."""
    px = np.asarray(Image.open(path).convert("RGB")).astype(int)
    rows, _ = np.nonzero(np.abs(px - ORANGE).sum(2) <= 6)
    return rows


def test_kept_checkpoints_are_marked_and_the_accuracy_axis_spans_the_scores(tmp_path):
    scores = [_score(10, "head", 50, 0.90), _score(50, "finetune", 1, 0.88), _score(90, "finetune", 2, 0.92)]
    kept = [{**scores[0], "file": "a"}, {**scores[2], "file": "b"}]
    path = tmp_path / "timeline.png"
    png = timeline_png(path, 100.0, PHASES, scores, kept, start=1000.0, reserve_s=10.0)
    assert path.read_bytes() == png
    rows = _orange_rows(path)
    # two kept dots, 0.90 and 0.92: on a 0..1 axis they would be a few px apart; on the scores' span, far apart
    assert len(rows) and rows.max() - rows.min() >= 20


def test_an_earlier_sessions_kept_checkpoint_is_drawn_and_unkept_scores_are_not_orange(tmp_path):
    earlier = {"time": 1005.0, "phase": "finetune", "epoch": 3, "val_accuracy": 0.91, "file": "c"}
    path = tmp_path / "timeline.png"
    timeline_png(path, 100.0, PHASES, [_score(50, "finetune", 4, 0.85)], [earlier], start=1000.0)
    assert len(_orange_rows(path)) > 0
    timeline_png(path, 100.0, PHASES, [_score(50, "finetune", 4, 0.85)], [], start=1000.0)
    assert len(_orange_rows(path)) == 0


def test_confusion_and_per_class_pictures_grow_with_the_classes(tmp_path):
    small = Image.open(_png(tmp_path / "a.png", confusion_png, 3))
    big = Image.open(_png(tmp_path / "b.png", confusion_png, 12))
    assert big.size[0] > small.size[0] and big.size[1] > small.size[1]
    assert Image.open(_png(tmp_path / "c.png", per_class_png, 12)).size[1] > 400


def _png(path, draw, n):
    cm = np.diag(np.arange(1, n + 1)) + 1
    draw(path, cm, [f"class {i}" for i in range(n)])
    return path


def test_chinese_class_names_are_drawn_with_a_cjk_font_not_boxes(tmp_path):
    """In a fresh process (a fresh font cache) with Debian's WenQuanYi Zen Hei installed (tests/services/fonts.sh),
    drawing Chinese names warns of no missing glyph; DejaVu alone would."""
    subprocess.run([str(SERVICES / "fonts.sh"), "install"], check=True, capture_output=True, timeout=600)
    code = ("import sys, numpy as np; from timebox.plots import confusion_png; "
            "confusion_png(sys.argv[1], np.eye(2, dtype=int) * 5, ['可回收物/纸板', '其他垃圾/烟蒂']); "
            "import matplotlib.pyplot as plt; print(plt.rcParams['font.family'])")
    env = {**os.environ, "MPLCONFIGDIR": str(tmp_path / "mpl"), "PYTHONPATH": str(Path(__file__).parents[1] / "submission")}
    done = subprocess.run([sys.executable, "-W", "error::UserWarning", "-c", code, str(tmp_path / "zh.png")],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "WenQuanYi Zen Hei" in done.stdout and (tmp_path / "zh.png").stat().st_size > 0
