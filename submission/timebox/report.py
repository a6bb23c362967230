"""The run report: what ran, on what machine, how training went, what was quarantined.

Everything lands in ``OUT/report/`` as JSON (and a CSV confusion matrix) so a later run,
a benchmark or a person can read it.
"""

from __future__ import annotations

import csv
import io
import os
import platform
import sys
from importlib import metadata
from pathlib import Path

import numpy as np
import psutil

from .fileio import atomic_write_json, atomic_write_text

_PACKAGES = ("tensorflow-cpu", "tensorflow", "keras", "numpy", "pillow", "psutil", "jax")


def environment() -> dict:
    """Versions, CPU, memory and accelerators of this machine."""
    versions = {}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    try:
        import keras

        from .accelerators import accelerators

        backend, devices = keras.backend.backend(), list(accelerators())
    except ImportError:
        backend, devices = None, []
    mem = psutil.virtual_memory()
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": versions,
        "keras_backend": backend,
        "cpu": {"logical": psutil.cpu_count(), "physical": psutil.cpu_count(logical=False),
                "affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
                "model": platform.processor() or _cpu_model()},
        "memory_gib": round(mem.total / 2**30, 1),
        "accelerators": devices,
        "malloc_env": {k: v for k, v in os.environ.items() if k.startswith("MALLOC_") or k == "LD_PRELOAD"},
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def confusion_csv(cm: np.ndarray, names: list[str]) -> str:
    """Rows: true class; columns: predicted class."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["true\\predicted", *names])
    for name, row in zip(names, cm):
        writer.writerow([name, *row.tolist()])
    return buf.getvalue()


def write_report(folder: Path, sections: dict[str, object], confusion: np.ndarray | None = None,
                 class_names: list[str] | None = None) -> None:
    """One JSON file per section (``config``, ``environment``, ``history``, ``quarantine``, ...)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in sections.items():
        atomic_write_json(folder / f"{name}.json", content)
    if confusion is not None and class_names is not None:
        atomic_write_text(folder / "confusion_val.csv", confusion_csv(confusion, class_names))


def timeline_png(path: Path, budget_s: float, phases: list[dict], scores: list[dict], kept: list[dict],
                 start: float) -> None:
    """Planned vs actual time per phase (bars), and the val accuracy of every scored model over time
    (``scores``: dicts with time, phase, epoch, val_accuracy), the checkpoints ``kept`` on disk highlighted
    and labelled (earlier sessions' kept checkpoints included). The accuracy axis spans the scores."""
    from PIL import Image, ImageDraw

    w, h, left, right = 900, 120 + 28 * len(phases) + 160, 110, 20
    img = Image.new("RGB", (w, h), "white")
    d = ImageDraw.Draw(img)
    x = lambda s: left + (w - left - right) * min(max(s, 0.0), budget_s) / budget_s  # noqa: E731
    d.text((10, 8), f"budget {budget_s:.0f}s: planned (outline) vs actual (filled) per phase", fill="black")
    for i, p in enumerate(phases):
        y = 34 + 28 * i
        d.text((10, y + 4), p["phase"], fill="black")
        if p.get("planned_s"):
            d.rectangle([x(p["start_s"]), y, x(p["start_s"] + p["planned_s"]), y + 20], outline="gray")
        d.rectangle([x(p["start_s"]), y + 4, x(p["start_s"] + p["actual_s"]), y + 16], fill="steelblue")
    d.line([x(budget_s), 28, x(budget_s), h - 20], fill="red", width=2)
    top, bottom = h - 150, h - 30
    d.text((10, top - 16), "val accuracy of scored models over time (orange: checkpoints kept)", fill="black")
    d.rectangle([left, top, w - right, bottom], outline="gray")
    key = lambda c: (c["phase"], c["epoch"])  # noqa: E731
    kept_keys, scored_keys = {key(c) for c in kept}, {key(c) for c in scores}
    points = sorted([*scores, *(c for c in kept if key(c) not in scored_keys)], key=lambda c: c["time"])
    accs = [c["val_accuracy"] for c in points] or [0.0, 1.0]
    lo, hi = max(0.0, np.floor(min(accs) * 20 - 0.2) / 20), min(1.0, np.ceil(max(accs) * 20 + 0.2) / 20)
    y = lambda a: bottom - (bottom - top) * (a - lo) / (hi - lo)  # noqa: E731
    if len(points) > 1:
        d.line([(x(c["time"] - start), y(c["val_accuracy"])) for c in points], fill="lightgray", width=1)
    for c in points:
        cx, cy, mark = x(c["time"] - start), y(c["val_accuracy"]), key(c) in kept_keys
        d.ellipse([cx - 4, cy - 4, cx + 4, cy + 4] if mark else [cx - 2, cy - 2, cx + 2, cy + 2],
                  fill="darkorange" if mark else "gray")
        if mark:
            d.text((cx + 6, cy - 12), f"{c['val_accuracy']:.3f}", fill="black")
    for a in (lo, (lo + hi) / 2, hi):
        d.text((left - 40, y(a) - 6), f"{a:.2f}", fill="black")
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
