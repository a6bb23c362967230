"""Read labelled image datasets in the three contest layouts, auto-detected.

- folders (Tianchi/Flink/Keras): root/<class>/*.jpg, ids from class_index.txt, else the folder names when all
  are integers ("10" is id 10), else the position of the name in sorted order.
- modelarts (Huawei): root/img_N.jpg + root/img_N.txt containing `img_N.jpg, K`,
  names from garbage_classify_rule.json.
- csv: `filename,label` rows in root/labels.csv, root/train.csv or an explicit CSV file.

An integer-valued label ("3", "3.0") is a class id in every layout; a label file mixing ids and names is refused.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from timebox.data.files import is_hidden, is_image, sorted_paths, walk_files
from timebox.data.labelfiles import (
    label_ids,
    parse_id,
    read_class_index,
    read_label_csv,
    read_modelarts_txt,
    read_rule_json,
)
from timebox.errors import UsageError

LAYOUTS = ("folders", "modelarts", "csv")
CLASS_INDEX = "class_index.txt"
RULE_JSON = "garbage_classify_rule.json"
CSV_NAMES = ("labels.csv", "train.csv")
METADATA_SUFFIXES = frozenset({".txt", ".json", ".csv", ".md"})


@dataclass(frozen=True, eq=False)
class Dataset:
    """A labelled image set; internal class i has contest id class_ids[i] and name class_names[i]."""

    files: list[Path]
    labels: np.ndarray
    class_ids: list[int]
    class_names: list[str]
    layout: str
    root: Path


def read_dataset(root: str | Path, layout: str = "auto", labels_csv: str | Path | None = None) -> Dataset:
    """Read a labelled dataset; layout is "auto" or one of LAYOUTS; labels_csv forces the csv layout."""
    path = _existing(root)
    if labels_csv is not None:
        if layout not in ("auto", "csv"):
            raise UsageError(
                f"a labels CSV ({labels_csv}) only works with layout 'csv', not {layout!r}; drop one of the two"
            )
        return _read_csv(path, _existing(labels_csv))
    if layout == "auto":
        layout = detect_layout(path)
    if layout in ("folders", "modelarts") and not path.is_dir():
        raise UsageError(f"{path} is not a directory; the {layout} layout needs the dataset folder")
    if layout == "folders":
        return _read_folders(path)
    if layout == "modelarts":
        return _read_modelarts(path)
    if layout == "csv":
        return _read_csv(path.parent if path.is_file() else path, _find_csv(path))
    raise UsageError(f"unknown layout {layout!r}; use one of auto, {', '.join(LAYOUTS)}")


def detect_layout(root: str | Path) -> str:
    """Name of the layout of root: a .csv file or a directory in one of LAYOUTS."""
    path = _existing(root)
    if path.is_file():
        if path.suffix.lower() == ".csv":
            return "csv"
        raise UsageError(f"{path} is a file; pass a dataset directory or a labels .csv file")
    entries = [p for p in path.iterdir() if not is_hidden(p)]
    image_stems = {p.stem for p in entries if p.is_file() and is_image(p)}
    if any(p.suffix.lower() == ".txt" and p.stem in image_stems for p in entries):
        return "modelarts"
    if any((path / name).is_file() for name in CSV_NAMES):
        return "csv"
    for name in ("train", "train_data"):
        if (path / name).is_dir():
            raise UsageError(f"{path} looks like a dataset root; pass its training folder {path / name} instead")
    if any(p.is_dir() and any(map(is_image, walk_files(p))) for p in entries):
        return "folders"
    if image_stems:
        raise UsageError(
            f"{path} holds images but no labels; expected class folders (<class>/*.jpg), "
            f"img_N.txt label files next to the images, or a {' / '.join(CSV_NAMES)} file"
        )
    raise UsageError(f"{path} contains no images; pass the folder that holds the dataset")


def list_images(root: str | Path) -> list[Path]:
    """Every non-hidden file below root (recursive, natural order) except .txt/.json/.csv/.md metadata."""
    path = _existing(root)
    if not path.is_dir():
        raise UsageError(f"{path} is not a directory; pass the folder of test images")
    files = [p for p in walk_files(path) if p.suffix.lower() not in METADATA_SUFFIXES]
    if not files:
        raise UsageError(f"{path} contains no image files; pass the folder of test images")
    return sorted_paths(files, path)


def _existing(root: str | Path) -> Path:
    path = Path(root).expanduser().resolve()
    if not path.exists():
        raise UsageError(f"{path} does not exist; check the dataset path")
    return path


def _find_near(folders: list[Path], name: str) -> Path | None:
    """First folders[i]/name that is a file."""
    return next((folder / name for folder in folders if (folder / name).is_file()), None)


def _dataset(
    pairs: list[tuple[Path, int]], class_ids: list[int], class_names: list[str], layout: str, root: Path
) -> Dataset:
    """Sort (file, contest id) pairs and check that every class has an image."""
    if not pairs:
        raise UsageError(f"{root} contains no labelled images; check the dataset path and layout")
    position = {class_id: i for i, class_id in enumerate(class_ids)}
    by_file = dict(pairs)
    files = sorted_paths(list(by_file), root)
    labels = np.array([position[by_file[f]] for f in files], dtype=np.int64)
    empty = np.flatnonzero(np.bincount(labels, minlength=len(class_ids)) == 0)
    if empty.size:
        i = empty[0]
        raise UsageError(
            f"class {class_names[i]!r} (id {class_ids[i]}) has no images in {root}; "
            "add images for it or remove it from the class list"
        )
    if len(class_ids) < 2:
        raise UsageError(
            f"{root} holds only one class ({class_names[0]!r}, id {class_ids[0]}); a classifier needs at least "
            "two: add the images of the other classes or pass the full training folder"
        )
    return Dataset(files, labels, class_ids, class_names, layout, root)


def _read_folders(root: Path) -> Dataset:
    folders = {unicodedata.normalize("NFC", p.name): p for p in root.iterdir() if p.is_dir() and not is_hidden(p)}
    index_path = _find_near([root, root.parent], CLASS_INDEX)
    if index_path is None:
        ids = _folder_ids(root, folders)
    else:
        ids = {unicodedata.normalize("NFC", name): class_id for name, class_id in read_class_index(index_path).items()}
        for name, folder in folders.items():
            if name not in ids:
                raise UsageError(
                    f"class folder {folder} is not listed in {index_path}; "
                    f"add a line '{name} <id>' there or remove the folder"
                )
    names = sorted(ids, key=ids.__getitem__)
    pairs = []
    for name in names:
        images = [p for p in walk_files(folders[name]) if is_image(p)] if name in folders else []
        if not images:
            listed = f" (listed in {index_path})" if index_path else ""
            raise UsageError(f"class {name!r}{listed} has no images in {root / name}; add images or remove the class")
        pairs += [(p, ids[name]) for p in images]
    return _dataset(pairs, [ids[n] for n in names], names, "folders", root)


def _folder_ids(root: Path, folders: dict[str, Path]) -> dict[str, int]:
    """Ids of class folders without class_index.txt: integer names are the ids, else sorted names count 0, 1, ..."""
    as_ids = {name: parse_id(name) for name in folders}
    if all(class_id is None for class_id in as_ids.values()):
        return {name: i for i, name in enumerate(sorted(folders))}
    named = sorted(name for name, class_id in as_ids.items() if class_id is None)
    if named:
        raise UsageError(
            f"class folder {folders[named[0]]} is named {named[0]!r} but other folders in {root} are class ids; "
            f"rename it to its id, or add {CLASS_INDEX} with a 'folder_name class_id' line per folder"
        )
    by_id: dict[int, str] = {}
    for name, class_id in sorted(as_ids.items()):
        if class_id in by_id:
            raise UsageError(
                f"class folders {by_id[class_id]!r} and {name!r} in {root} both stand for id {class_id}; "
                "merge or rename one of them"
            )
        by_id[class_id] = name
    return {name: class_id for class_id, name in by_id.items()}


def _read_modelarts(root: Path) -> Dataset:
    entries = [p for p in root.iterdir() if p.is_file() and not is_hidden(p)]
    rule_path = _find_near([root, root.parent], RULE_JSON)
    rule = read_rule_json(rule_path) if rule_path else None
    pairs: dict[Path, int] = {}
    for txt in sorted_paths([p for p in entries if p.suffix.lower() == ".txt"], root):
        name, class_id = read_modelarts_txt(txt)
        image = root / name
        if not image.is_file():
            raise UsageError(
                f"{txt}:1: names image {name!r} but {image} does not exist; fix the name or delete {txt.name}"
            )
        if rule is not None and class_id not in rule:
            raise UsageError(f"{txt}:1: unknown class id {class_id}; {rule_path} defines ids {sorted(rule)}")
        if image in pairs:
            raise UsageError(f"{txt}:1: image {name!r} is labelled by two .txt files; keep one")
        pairs[image] = class_id
    unlabelled = [p for p in entries if is_image(p) and p not in pairs]
    if unlabelled:
        first = sorted_paths(unlabelled, root)[0]
        raise UsageError(
            f"{first} has no label file ({len(unlabelled)} images lack one); "
            f"add {first.stem}.txt containing '{first.name}, K' or remove the image"
        )
    class_ids = sorted(rule) if rule else sorted(set(pairs.values()))
    names = [rule[c] for c in class_ids] if rule else [str(c) for c in class_ids]
    return _dataset(list(pairs.items()), class_ids, names, "modelarts", root)


def _find_csv(path: Path) -> Path:
    if path.is_file():
        return path
    found = next((path / name for name in CSV_NAMES if (path / name).is_file()), None)
    if found is None:
        raise UsageError(f"{path} has no {' or '.join(CSV_NAMES)}; add one or pass the labels CSV explicitly")
    return found


def _read_csv(root: Path, csv_path: Path) -> Dataset:
    """A `filename,label` CSV whose labels are all ids or all names; names and ids from a class list near it."""
    rows = read_label_csv(csv_path)
    if not rows:
        raise UsageError(f"{csv_path} has no data rows; expected 'filename,label' rows")
    base = _csv_image_dir(root, csv_path, rows[0])
    names_by_id, source = _csv_class_names(root, csv_path)
    ids = label_ids(csv_path, [(lineno, label) for lineno, _, label in rows])
    if names_by_id is None and ids is not None:
        names_by_id = {i: str(i) for i in sorted(set(ids))}
    elif names_by_id is None:
        names_by_id = dict(enumerate(sorted({label for _, _, label in rows})))
    if ids is None:  # name labels: the label text is the key
        keys: list[int | str] = [label for _, _, label in rows]
        id_of: dict[int | str, int] = {name: i for i, name in names_by_id.items()}
    else:
        keys, id_of = list(ids), {i: i for i in names_by_id}
    pairs = []
    first_line: dict[Path, int] = {}
    for (lineno, filename, label), key in zip(rows, keys):
        image = base / filename
        if not image.is_file():
            raise UsageError(
                f"{csv_path}:{lineno}: image {filename!r} not found in {base}; fix the file name or delete the row"
            )
        if image in first_line:
            raise UsageError(f"{csv_path}:{lineno}: image {filename!r} is already listed on line {first_line[image]}")
        if key not in id_of:
            raise UsageError(f"{csv_path}:{lineno}: unknown class {label!r}; {source} defines {sorted(id_of)}")
        first_line[image] = lineno
        pairs.append((image, id_of[key]))
    class_ids = sorted(names_by_id)
    return _dataset(pairs, class_ids, [names_by_id[c] for c in class_ids], "csv", base)


def _csv_class_names(root: Path, csv_path: Path) -> tuple[dict[int, str] | None, Path | None]:
    """Class names by id from a class_index.txt or rule JSON near the CSV, and that file; (None, None) if none."""
    near = list(dict.fromkeys([root, csv_path.parent, root.parent]))
    index_path, rule_path = _find_near(near, CLASS_INDEX), _find_near(near, RULE_JSON)
    if index_path:
        return {i: n for n, i in read_class_index(index_path).items()}, index_path
    if rule_path:
        return read_rule_json(rule_path), rule_path
    return None, None


def _csv_image_dir(root: Path, csv_path: Path, first_row: tuple[int, str, str]) -> Path:
    """Folder the CSV's file names are relative to: root, the CSV's folder, or its images/ subfolder."""
    lineno, filename, _ = first_row
    candidates = list(dict.fromkeys([root, csv_path.parent, csv_path.parent / "images"]))
    for folder in candidates:
        if (folder / filename).is_file():
            return folder
    raise UsageError(
        f"{csv_path}:{lineno}: image {filename!r} not found in {' or '.join(map(str, candidates))}; "
        "put the images next to the CSV or in an images/ folder"
    )
