"""The run in pictures (matplotlib, PNG in ``OUT/report/``):

- ``timeline.png``: each phase's planned (outline) against spent (filled) seconds on the run's time axis, the end
  reserve and the deadline; below, the val accuracy of every scored model over time, kept checkpoints marked.
- ``confusion.png``: the val confusion matrix as a heatmap with the class names (a CJK font, when one is
  installed, draws Chinese names: fonts-noto-cjk or fonts-wqy-zenhei on Debian).
- ``per_class.png``: each class's val accuracy.

Example::

    png = confusion_png(report / "confusion.png", cm, ["cardboard", "glass"])    # the PNG's bytes
"""

from __future__ import annotations

import io
import logging
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib import font_manager  # noqa: E402

from .fileio import atomic_write_bytes  # noqa: E402
from .metrics import per_class_accuracy  # noqa: E402

_CJK = ("Noto Sans CJK SC", "Noto Sans CJK JP", "Noto Sans SC", "WenQuanYi Zen Hei", "WenQuanYi Micro Hei",
        "Source Han Sans SC", "SimHei", "Microsoft YaHei", "PingFang SC", "AR PL UMing CN")


def _fonts() -> None:
    """DejaVu Sans, then the first CJK font installed (matplotlib falls back glyph by glyph)."""
    installed = {f.name for f in font_manager.fontManager.ttflist}
    plt.rcParams["font.family"] = ["DejaVu Sans", *[f for f in _CJK if f in installed][:1]]
    logging.getLogger("matplotlib.font_manager").setLevel(logging.ERROR)


def save_png(fig, path: Path, dpi: int = 100) -> bytes:
    """``fig`` as a PNG at ``path`` (replaced atomically), closed; the PNG's bytes."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())
    return buffer.getvalue()


def timeline_png(path: Path, budget_s: float, phases: list[dict], scores: list[dict], kept: list[dict],
                 start: float, reserve_s: float = 0.0) -> bytes:
    """``phases``: dicts with phase, start_s, planned_s, actual_s; ``scores`` and ``kept``: dicts with time (epoch
    seconds), phase, epoch, val_accuracy; ``start``: the run's start (epoch seconds)."""
    _fonts()
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 2.2 + 0.32 * len(phases) + 2.6), sharex=True,
                                      gridspec_kw={"height_ratios": [max(1, len(phases)), 4]})
    for i, p in enumerate(phases):
        if p.get("planned_s"):
            top.barh(i, p["planned_s"], left=p["start_s"], height=0.8, fill=False, edgecolor="grey",
                     label="planned" if "planned" not in top.get_legend_handles_labels()[1] else None)
        top.barh(i, p["actual_s"], left=p["start_s"], height=0.45, color="steelblue",
                 label="spent" if i == 0 else None)
    top.set_yticks(range(len(phases)), [p["phase"] for p in phases])
    top.invert_yaxis()
    for ax in (top, bottom):
        if reserve_s:
            ax.axvspan(budget_s - reserve_s, budget_s, color="orange", alpha=0.15,
                       label="end reserve" if ax is top else None)
        ax.axvline(budget_s, color="red", lw=1.5, label="deadline" if ax is top else None)
    top.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8)
    top.set_title(f"budget {budget_s:.0f} s: planned vs spent per phase")
    key = lambda c: (c["phase"], c["epoch"])  # noqa: E731
    kept_keys, scored_keys = {key(c) for c in kept}, {key(c) for c in scores}
    points = sorted([*scores, *(c for c in kept if key(c) not in scored_keys)], key=lambda c: c["time"])
    if points:
        t = np.array([c["time"] - start for c in points])
        acc = np.array([100 * c["val_accuracy"] for c in points])
        mark = np.array([key(c) in kept_keys for c in points])
        bottom.plot(t, acc, color="lightgrey", lw=1)
        for sel, size, colour, label in ((~mark, 12, "grey", "scored"), (mark, 36, "darkorange", "checkpoint kept")):
            if sel.any():
                bottom.scatter(t[sel], acc[sel], s=size, color=colour, label=label)
        bottom.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8)
    bottom.set_ylabel("val accuracy (%)")
    bottom.set_xlabel("seconds since the run's start")
    bottom.set_xlim(0, budget_s * 1.02)
    bottom.grid(alpha=0.3)
    return save_png(fig, path)


def confusion_png(path: Path, cm: np.ndarray, names: list[str]) -> bytes:
    """Rows: true class, columns: predicted; each cell its count, coloured by its share of the row."""
    _fonts()
    n = len(names)
    share = cm / np.maximum(1, cm.sum(axis=1, keepdims=True))
    fig, ax = plt.subplots(figsize=(2.5 + 0.55 * n, 2 + 0.5 * n))
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for i in range(n):
        for j in range(n):
            ax.text(j, i, str(int(cm[i, j])), ha="center", va="center", fontsize=8,
                    color="white" if share[i, j] > 0.5 else "black")
    ax.set_xticks(range(n), names, rotation=45, ha="right")
    ax.set_yticks(range(n), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"val confusion matrix ({int(cm.sum())} images)")
    return save_png(fig, path)


def per_class_png(path: Path, cm: np.ndarray, names: list[str]) -> bytes:
    """Each class's val accuracy (its diagonal share), with its image count."""
    _fonts()
    counts = cm.sum(axis=1)
    acc = 100 * np.nan_to_num(per_class_accuracy(cm))  # a class with no image: 0
    fig, ax = plt.subplots(figsize=(7, 1 + 0.35 * len(names)))
    ax.barh(range(len(names)), acc, color="steelblue")
    for i, (a, c) in enumerate(zip(acc, counts)):
        inside = a > 35
        ax.text(a - 1 if inside else a + 1, i, f"{a:.1f}% of {int(c)}", ha="right" if inside else "left",
                va="center", fontsize=8, color="white" if inside else "black")
    ax.set_yticks(range(len(names)), names)
    ax.invert_yaxis()
    ax.set_xlim(0, 100)
    ax.set_xlabel("val accuracy (%)")
    ax.set_title(f"per class: macro accuracy {acc.mean():.1f}%")
    return save_png(fig, path)
