"""Dataset layouts: auto-detection, reading, and a clear UsageError for every bad input."""

from pathlib import Path

import numpy as np
import pytest

from timebox.data.layouts import detect_layout, list_images, read_dataset
from timebox.errors import UsageError

SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets"


def touch(path: Path, content: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


def make_folders(root: Path, classes: dict[str, int]) -> Path:
    for name, count in classes.items():
        for i in range(count):
            touch(root / name / f"{i}.jpg")
    return root


def make_modelarts(root: Path, labels: list[int], rule: str | None = None) -> Path:
    for i, label in enumerate(labels, start=1):
        touch(root / f"img_{i}.jpg")
        (root / f"img_{i}.txt").write_text(f"img_{i}.jpg, {label}")
    if rule is not None:
        (root / "garbage_classify_rule.json").write_text(rule, encoding="utf-8")
    return root


# --- folders -----------------------------------------------------------------------------------


def test_folders_detected_and_class_ids_follow_sorted_folder_names(tmp_path):
    root = make_folders(tmp_path / "train", {"b": 2, "a": 3})
    (root / "a" / "notes.doc").write_text("not an image")
    assert detect_layout(root) == "folders"
    ds = read_dataset(root)
    assert ds.layout == "folders" and ds.root == root.resolve()
    assert ds.class_names == ["a", "b"] and ds.class_ids == [0, 1]
    assert [f.relative_to(root).as_posix() for f in ds.files] == ["a/0.jpg", "a/1.jpg", "a/2.jpg", "b/0.jpg", "b/1.jpg"]
    assert ds.labels.dtype == np.int64 and ds.labels.tolist() == [0, 0, 0, 1, 1]
    assert all(f.is_absolute() for f in ds.files)


def test_folders_class_index_ids_honoured_with_chinese_and_spaced_names(tmp_path):
    root = make_folders(tmp_path / "train", {"可回收物": 1, "red rose": 2, "daisy": 1})
    (root / "class_index.txt").write_text("daisy 7\nred rose   3\n\n可回收物 5\n", encoding="utf-8")
    ds = read_dataset(root)
    assert ds.class_ids == [3, 5, 7]
    assert ds.class_names == ["red rose", "可回收物", "daisy"]
    by_name = {f.parent.name: ds.class_names[label] for f, label in zip(ds.files, ds.labels)}
    assert by_name == {"red rose": "red rose", "可回收物": "可回收物", "daisy": "daisy"}


def test_folders_class_index_in_parent_dir_is_used(tmp_path):
    make_folders(tmp_path / "train", {"x": 1, "y": 1})
    (tmp_path / "class_index.txt").write_text("y 0\nx 1\n")
    ds = read_dataset(tmp_path / "train")
    assert ds.class_names == ["y", "x"] and ds.class_ids == [0, 1]


def test_folders_files_sorted_naturally_and_hidden_files_skipped(tmp_path):
    root = tmp_path / "train"
    for name in ["img_10.jpg", "img_2.jpg", "img_1.JPG", ".hidden.jpg", ".git/x.jpg"]:
        touch(root / "c" / name)
    touch(root / "d" / "x.jpg")  # a training set needs two classes
    ds = read_dataset(root)
    assert [f.name for f in ds.files] == ["img_1.JPG", "img_2.jpg", "img_10.jpg", "x.jpg"]


def test_folder_missing_from_class_index_names_folder_and_index(tmp_path):
    root = make_folders(tmp_path / "train", {"a": 1, "stray": 1})
    (root / "class_index.txt").write_text("a 0\n")
    with pytest.raises(UsageError, match=r"stray.*class_index\.txt"):
        read_dataset(root)


def test_class_listed_in_index_without_images_is_named(tmp_path):
    root = make_folders(tmp_path / "train", {"a": 1})
    (root / "ghost").mkdir()
    (root / "class_index.txt").write_text("a 0\nghost 1\n")
    with pytest.raises(UsageError, match="'ghost'.*no images"):
        read_dataset(root)


def test_class_folder_without_images_is_named(tmp_path):
    root = make_folders(tmp_path / "train", {"a": 1, "b": 1})
    (root / "empty").mkdir()
    (root / "empty" / "readme.md").write_text("nothing here")
    with pytest.raises(UsageError, match="'empty'.*no images"):
        read_dataset(root)


def test_unparseable_class_index_line_reports_file_and_line(tmp_path):
    root = make_folders(tmp_path / "train", {"a": 1, "b": 1})
    (root / "class_index.txt").write_text("a 0\n\nb one\n")
    with pytest.raises(UsageError, match=r"class_index\.txt:3: expected 'class_name class_id'"):
        read_dataset(root)


# --- modelarts ---------------------------------------------------------------------------------


def test_modelarts_detected_with_names_from_rule_json_in_parent(tmp_path):
    root = make_modelarts(tmp_path / "train_data", [1, 0, 1, 2, 0, 1, 2, 0, 1, 2, 2])
    rule = '{"0": "其他垃圾/烟蒂", "1": "厨余垃圾/菜叶", "2": "可回收物/纸"}'
    (tmp_path / "garbage_classify_rule.json").write_text(rule, encoding="utf-8")
    assert detect_layout(root) == "modelarts"
    ds = read_dataset(root)
    assert ds.layout == "modelarts" and ds.class_ids == [0, 1, 2]
    assert ds.class_names == ["其他垃圾/烟蒂", "厨余垃圾/菜叶", "可回收物/纸"]
    assert [f.name for f in ds.files][:3] == ["img_1.jpg", "img_2.jpg", "img_3.jpg"]
    assert ds.files[-1].name == "img_11.jpg"
    assert ds.labels.tolist() == [1, 0, 1, 2, 0, 1, 2, 0, 1, 2, 2]


def test_modelarts_without_rule_uses_ids_present_as_names(tmp_path):
    ds = read_dataset(make_modelarts(tmp_path, [4, 9, 4]))
    assert ds.class_ids == [4, 9] and ds.class_names == ["4", "9"]
    assert ds.labels.tolist() == [0, 1, 0]


def test_modelarts_unparseable_txt_reports_file_line_and_expected_form(tmp_path):
    root = make_modelarts(tmp_path, [0, 1])
    (root / "img_2.txt").write_text("img_2.jpg label-one")
    with pytest.raises(UsageError, match=r"img_2\.txt:1: expected 'img_N\.jpg, K'"):
        read_dataset(root)


def test_modelarts_unknown_class_id_is_rejected(tmp_path):
    root = make_modelarts(tmp_path, [0, 1, 7], rule='{"0": "a", "1": "b"}')
    with pytest.raises(UsageError, match=r"img_3\.txt:1: unknown class id 7"):
        read_dataset(root)


def test_modelarts_txt_naming_missing_image_is_rejected(tmp_path):
    root = make_modelarts(tmp_path, [0, 1])
    (root / "img_3.txt").write_text("img_3.jpg, 0")
    with pytest.raises(UsageError, match=r"img_3\.txt:1: names image 'img_3\.jpg' but .* does not exist"):
        read_dataset(root)


def test_modelarts_rule_class_without_images_is_named(tmp_path):
    root = make_modelarts(tmp_path, [0, 0], rule='{"0": "paper", "1": "glass"}')
    with pytest.raises(UsageError, match="'glass'.*no images"):
        read_dataset(root)


def test_modelarts_image_without_label_file_is_rejected(tmp_path):
    root = make_modelarts(tmp_path, [0, 1])
    touch(root / "img_9.jpg")
    with pytest.raises(UsageError, match=r"img_9\.jpg has no label file"):
        read_dataset(root)


# --- csv ---------------------------------------------------------------------------------------


def test_csv_detected_with_header_and_images_subdir(tmp_path):
    for name in ["x.jpg", "y.png", "z.jpg"]:
        touch(tmp_path / "images" / name)
    (tmp_path / "labels.csv").write_text("filename,label\nz.jpg,1\nx.jpg,0\ny.png,1\n")
    assert detect_layout(tmp_path) == "csv"
    ds = read_dataset(tmp_path)
    assert ds.layout == "csv" and ds.root == (tmp_path / "images").resolve()
    assert [f.name for f in ds.files] == ["x.jpg", "y.png", "z.jpg"]
    assert ds.class_ids == [0, 1] and ds.labels.tolist() == [0, 1, 1]


def test_csv_without_header_with_name_labels(tmp_path):
    for name in ["a.jpg", "b.jpg"]:
        touch(tmp_path / name)
    (tmp_path / "train.csv").write_text("a.jpg,tulip\nb.jpg,daisy\n")
    ds = read_dataset(tmp_path)
    assert ds.class_names == ["daisy", "tulip"] and ds.class_ids == [0, 1]
    assert ds.labels.tolist() == [1, 0]


def test_explicit_labels_csv_with_images_in_root_and_names_from_class_index(tmp_path):
    for name in ["00001.jpg", "00002.jpg"]:
        touch(tmp_path / "test" / name)
    (tmp_path / "test_labels.csv").write_text("filename,label\n00001.jpg,1\n00002.jpg,0\n")
    (tmp_path / "class_index.txt").write_text("daisy 0\nrose 1\n")
    ds = read_dataset(tmp_path / "test", labels_csv=tmp_path / "test_labels.csv")
    assert ds.class_names == ["daisy", "rose"] and ds.labels.tolist() == [1, 0]


def test_csv_bad_row_reports_file_and_line(tmp_path):
    touch(tmp_path / "a.jpg")
    (tmp_path / "labels.csv").write_text("filename,label\na.jpg,0\na.jpg\n")
    with pytest.raises(UsageError, match=r"labels\.csv:3: expected 'filename,label'"):
        read_dataset(tmp_path)


def test_csv_row_naming_missing_image_reports_line(tmp_path):
    touch(tmp_path / "a.jpg")
    (tmp_path / "labels.csv").write_text("a.jpg,0\nb.jpg,1\n")
    with pytest.raises(UsageError, match=r"labels\.csv:2: image 'b\.jpg' not found"):
        read_dataset(tmp_path)


def test_csv_unknown_class_id_against_class_index(tmp_path):
    for name in ["a.jpg", "b.jpg"]:
        touch(tmp_path / name)
    (tmp_path / "labels.csv").write_text("a.jpg,0\nb.jpg,5\n")
    (tmp_path / "class_index.txt").write_text("cat 0\ndog 1\n")
    with pytest.raises(UsageError, match=r"labels\.csv:2: unknown class '5'"):
        read_dataset(tmp_path)


def test_csv_duplicate_row_reports_both_lines(tmp_path):
    touch(tmp_path / "a.jpg")
    (tmp_path / "labels.csv").write_text("filename,label\na.jpg,0\na.jpg,0\n")
    with pytest.raises(UsageError, match=r"labels\.csv:3: image 'a\.jpg' is already listed on line 2"):
        read_dataset(tmp_path)


# --- missing / empty / unlabelled --------------------------------------------------------------


def test_missing_directory_is_named(tmp_path):
    with pytest.raises(UsageError, match="nope.*does not exist"):
        read_dataset(tmp_path / "nope")


def test_empty_directory_is_named(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="empty contains no images"):
        read_dataset(tmp_path / "empty")
    with pytest.raises(UsageError, match="empty contains no image files"):
        list_images(tmp_path / "empty")


def test_dataset_root_with_train_folder_points_to_it(tmp_path):
    make_folders(tmp_path / "train", {"a": 1})
    touch(tmp_path / "test" / "00001.jpg")
    with pytest.raises(UsageError, match="pass its training folder .*train"):
        read_dataset(tmp_path)


def test_images_without_labels_are_rejected(tmp_path):
    touch(tmp_path / "a.jpg")
    with pytest.raises(UsageError, match="holds images but no labels"):
        read_dataset(tmp_path)


def test_list_images_keeps_every_non_metadata_file_sorted(tmp_path):
    names = ["10.jpg", "2.png", "sub/1.jpg", "broken.jpg", "weird.dat", "labels.csv", "a.txt", "m.json", "README.md"]
    for name in names + [".DS_Store", ".cache/x.jpg"]:
        touch(tmp_path / name)
    assert [p.relative_to(tmp_path).as_posix() for p in list_images(tmp_path)] == [
        "2.png", "10.jpg", "broken.jpg", "sub/1.jpg", "weird.dat",
    ]


# --- real contest datasets ---------------------------------------------------------------------


def require_shared(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path} not available")
    return path


def test_real_trashnet_train_data_modelarts_layout():
    ds = read_dataset(require_shared(SHARED / "trashnet" / "train_data"))
    assert ds.layout == "modelarts" and len(ds.files) == 2022
    assert ds.class_ids == [0, 1, 2, 3, 4, 5]
    assert ds.class_names[0] == "recyclable/cardboard" and ds.class_names[5] == "other/trash"
    assert np.bincount(ds.labels).sum() == 2022 and (np.bincount(ds.labels) > 0).all()


def test_real_flowers5_train_folders_layout():
    ds = read_dataset(require_shared(SHARED / "flowers5" / "train"))
    assert ds.layout == "folders" and len(ds.files) == 3453
    assert ds.class_names == ["daisy", "dandelion", "rose", "sunflower", "tulip"]
    assert ds.class_ids == [0, 1, 2, 3, 4]
    assert np.bincount(ds.labels).tolist() == [611, 842, 627, 586, 787]
