"""Rebuild ``demo_data/trashnet_mini/`` from the TrashNet photos in ``../shared/datasets/trashnet`` (MIT, see
LICENSE there): the first N training and M test images of each class by file number, long side 192 px, JPEG
quality 80, laid out as ``./run.sh demo --data`` reads (train/<class>/, test/, test_labels.csv, class_index.txt).

    .venv/bin/python demo_data/make_trashnet_mini.py ../shared/datasets/trashnet demo_data/trashnet_mini
"""

import csv
import json
import re
import shutil
import sys
from pathlib import Path

from PIL import Image

N_TRAIN, N_TEST, LONG_SIDE, QUALITY = 100, 20, 256, 75


def number(path: Path) -> int:
    return int(re.search(r"\d+", path.stem).group())


def save_small(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    with Image.open(src) as im:
        im = im.convert("RGB")
        im.thumbnail((LONG_SIDE, LONG_SIDE), Image.Resampling.LANCZOS)
        im.save(dest, "JPEG", quality=QUALITY, optimize=True)


def main(source: Path, out: Path) -> None:
    names = {int(k): v.split("/")[-1] for k, v in json.loads((source / "garbage_classify_rule.json").read_text()).items()}
    shutil.rmtree(out, ignore_errors=True)
    train = {}
    for txt in sorted((source / "train_data").glob("img_*.txt"), key=number):
        file, label = (p.strip() for p in txt.read_text().split(","))
        train.setdefault(int(label), []).append(file)
    for label, files in sorted(train.items()):
        for file in files[:N_TRAIN]:
            save_small(source / "train_data" / file, out / "train" / names[label] / file)
    test = {}
    with open(source / "test_labels.csv", newline="") as f:
        for row in csv.DictReader(f):
            test.setdefault(int(row["label"]), []).append(row["filename"])
    rows = []
    for label, files in sorted(test.items()):
        for file in sorted(files, key=lambda f: number(Path(f)))[:N_TEST]:
            save_small(source / "test_data" / file, out / "test" / file)
            rows.append((file, label))
    with open(out / "test_labels.csv", "w", newline="") as f:
        csv.writer(f, lineterminator="\n").writerows([("filename", "label"), *sorted(rows)])
    (out / "class_index.txt").write_text("".join(f"{names[k]} {k}\n" for k in sorted(names)))


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
