"""make_synthetic: deterministic flowers5-style dataset that read_dataset understands."""

import numpy as np
import pytest

from timebox.data.decode import decode_image
from timebox.data.layouts import read_dataset
from timebox.data.synthetic import make_synthetic
from timebox.errors import UsageError


def snapshot(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_gives_identical_files_and_other_seed_differs(tmp_path):
    a = make_synthetic(tmp_path / "a", n_per_class=3, n_test_per_class=2, size=32, seed=5)
    b = make_synthetic(tmp_path / "b", n_per_class=3, n_test_per_class=2, size=32, seed=5)
    c = make_synthetic(tmp_path / "c", n_per_class=3, n_test_per_class=2, size=32, seed=6)
    assert snapshot(a) == snapshot(b)
    assert snapshot(a) != snapshot(c)


def test_train_split_reads_as_folders_with_class_index(tmp_path):
    root = make_synthetic(tmp_path / "syn", n_per_class=4, n_test_per_class=1, size=32)
    index_lines = (root / "train" / "class_index.txt").read_text().splitlines()
    assert index_lines == ["circle 0", "square 1", "stripes 2", "triangle 3"]
    ds = read_dataset(root / "train")
    assert ds.layout == "folders" and ds.class_names == ["circle", "square", "stripes", "triangle"]
    assert np.bincount(ds.labels).tolist() == [4, 4, 4, 4]
    assert all(decode_image(f, 32).error is None for f in ds.files)


def test_test_split_is_flat_shuffled_and_labelled_by_csv(tmp_path):
    root = make_synthetic(tmp_path / "syn", n_per_class=1, n_test_per_class=5, size=32, classes=("square", "circle"))
    names = sorted(p.name for p in (root / "test").iterdir())
    assert names == [f"{i:05d}.jpg" for i in range(10)]
    lines = (root / "test_labels.csv").read_text().splitlines()
    assert lines[0] == "filename,label" and len(lines) == 11
    ds = read_dataset(root / "test", labels_csv=root / "test_labels.csv")
    assert ds.class_names == ["square", "circle"] and np.bincount(ds.labels).tolist() == [5, 5]
    assert ds.labels.tolist() != sorted(ds.labels.tolist())


def test_classes_differ_visibly(tmp_path):
    """Stripes have far more edges than solid shapes: a crude check that classes are distinguishable."""
    root = make_synthetic(tmp_path / "syn", n_per_class=5, n_test_per_class=0, size=64)

    def edges(name):
        images = [decode_image(f, 64).image.astype(float) for f in (root / "train" / name).iterdir()]
        return np.mean([np.abs(np.diff(im, axis=1)).mean() for im in images])

    assert edges("stripes") > 2 * max(edges("circle"), edges("square"), edges("triangle"))


def test_unknown_class_name_is_rejected(tmp_path):
    with pytest.raises(UsageError, match="hexagon"):
        make_synthetic(tmp_path, classes=("circle", "hexagon"))
