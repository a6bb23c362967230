"""The demo's real photos (demo_data/trashnet_mini): small enough to live in the project, licensed, and laid out
as `./run.sh demo` reads them (6 TrashNet classes with the contest's ids, a labelled test split)."""

import csv
from pathlib import Path

from timebox.cli import DEMO_DATA
from timebox.data.layouts import read_dataset

CLASSES = ["cardboard", "glass", "metal", "paper", "plastic", "trash"]


def test_the_demo_photos_are_at_most_5_mb_and_carry_their_license():
    size = sum(p.stat().st_size for p in DEMO_DATA.rglob("*") if p.is_file())
    assert size <= 5_000_000, f"{size} bytes"
    assert "MIT License" in (DEMO_DATA / "LICENSE").read_text() and "garythung/trashnet" in (
        DEMO_DATA / "README.md").read_text()


def test_the_demo_photos_read_as_six_classes_with_a_labelled_test_split():
    ds = read_dataset(DEMO_DATA / "train")
    assert ds.class_names == CLASSES and ds.class_ids == list(range(6))
    assert [int((ds.labels == k).sum()) for k in range(6)] == [100] * 6
    with open(DEMO_DATA / "test_labels.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert sorted(r["filename"] for r in rows) == sorted(p.name for p in (DEMO_DATA / "test").iterdir())
    assert sorted(int(r["label"]) for r in rows) == sorted(list(range(6)) * 20)
