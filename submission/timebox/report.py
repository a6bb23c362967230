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

