"""The tuning set: a stratified, seeded subsample of a labelled folder, as the judge would see it.

``TUNE/data/train/<class id>/`` holds links to the training images (a layout ``online`` reads), and
``TUNE/data/val/`` links to the held-out images, which each trial predicts like a judge's hidden test set;
their labels stay in ``TUNE/data/val_labels.json``. Drawing it again with the same arguments reuses it;
other arguments in the same folder are refused (their trials would not compare).

Example::

    data = draw_subsample(Path("datasets/trashnet/train_data"), Path("TUNE/data"), n_train=1000, n_val=300,
                          seed=0)
    len(data.val_labels)        # 300
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from timebox.config import files_fingerprint
from timebox.data.layouts import read_dataset
from timebox.data.splits import stratified_subsample
from timebox.errors import UsageError
from timebox.fileio import atomic_write_text
from timebox.filelock import FileLock

RECORD = "subsample.json"


@dataclass(frozen=True)
class Subsample:
    """The tuning set's folders and the held-out labels (file name -> contest class id)."""

    train: Path
    val: Path
    val_labels: dict[str, int]
    n_classes: int
    n_train: int


def draw_subsample(data: Path, folder: Path, n_train: int | None, n_val: int, seed: int) -> Subsample:
    """``n_train`` training and ``n_val`` held-out images of ``data`` (any layout ``online`` reads; None: all
    images but the held-out ones), class proportions kept, into ``folder``."""
    data, folder = Path(data), Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    want = {"data": str(data.resolve()), "files": files_fingerprint(data), "train": n_train, "val": n_val,
            "seed": seed}
    with FileLock(folder / "subsample.lock").held(exclusive=True):
        record = folder / RECORD
        if record.is_file():
            have = json.loads(record.read_text())
            if have["want"] != want:
                raise UsageError(f"{record}: this tuning folder was drawn from {have['want']}, not {want}; "
                                 "pass another --out (or the same --data, --train, --val and --seed)")
            return _loaded(folder, have)
        for part in ("train", "val"):
            shutil.rmtree(folder / part, ignore_errors=True)  # a draw that was killed halfway
        return _draw(data, folder, want, n_train, n_val, seed)


def _draw(data: Path, folder: Path, want: dict, n_train: int | None, n_val: int, seed: int) -> Subsample:
    ds = read_dataset(data)
    n = len(ds.files)
    if n_val < len(ds.class_ids) or n_val >= n:
        raise UsageError(f"--val {n_val}: {data} has {n} images in {len(ds.class_ids)} classes; hold out at least "
                         f"one image per class and leave some to train on")
    val_idx = stratified_subsample(ds.labels, n_val, seed)
    rest = np.setdiff1d(np.arange(n), val_idx)
    if n_train is not None:
        rest = rest[stratified_subsample(ds.labels[rest], n_train, seed)]
    labels = {}
    (folder / "val").mkdir()
    for i in val_idx:
        name = f"{i:06d}_{ds.files[i].name}"
        os.symlink(ds.files[i].resolve(), folder / "val" / name)
        labels[name] = ds.class_ids[ds.labels[i]]
    for i in rest:
        class_folder = folder / "train" / str(ds.class_ids[ds.labels[i]])
        class_folder.mkdir(parents=True, exist_ok=True)
        os.symlink(ds.files[i].resolve(), class_folder / f"{i:06d}_{ds.files[i].name}")
    record = {"want": want, "val_labels": labels, "n_train": len(rest), "classes": len(ds.class_ids)}
    atomic_write_text(folder / RECORD, json.dumps(record, indent=1))
    return _loaded(folder, record)


def _loaded(folder: Path, record: dict) -> Subsample:
    return Subsample(folder / "train", folder / "val", {k: int(v) for k, v in record["val_labels"].items()},
                     record["classes"], record["n_train"])
