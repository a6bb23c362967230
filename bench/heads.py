"""Classifier heads alone on pooled backbone features: the numpy heads (the early head's) against Keras' fitted for a
few seconds, test accuracy, macro accuracy and seconds to fit.

    .venv/bin/python bench/heads.py [--data trashnet,flowers5,lt] [--seeds 0,1,2] [--heads lin,cos,kcos,ksm]

Features: Lite0 at 224 px, original view, every training and test image once (cached in ``--out`` per dataset).
Per seed a stratified 15% of the training images is val; balanced class weights, label smoothing 0.1 (the defaults).
Heads: ``lin`` softmax regression in numpy (``fit_linear_head``), ``cos`` the cosine head in numpy
(``fit_cosine_head``), ``kcos`` / ``ksm`` the cosine / softmax head fitted by Keras for ``--keras-s`` seconds
(``fit_head``). ``lt`` is flowers5 with its classes cut to 100/50/25/12/6% (per seed), test unchanged.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import time
from pathlib import Path

import numpy as np
from _online import FLOWERS, ROOT, work_dir
from timebox.data.cache import build_cache
from timebox.data.layouts import list_images, read_dataset
from timebox.data.splits import stratified_split
from timebox.models.features import extract_features
from timebox.models.heads import HeadSpec
from timebox.models.registry import build_feature_extractor, get_backbone
from timebox.train.cosine_head import fit_cosine_head
from timebox.train.head import fit_head
from timebox.train.linear_head import fit_linear_head
from timebox.train.recipe import Recipe

SETS = {"trashnet": (ROOT.parent / "shared" / "datasets" / "trashnet", "train_data", "test_data"),
        "flowers5": (FLOWERS, "train", "test")}
SHARES = (1.0, 0.5, 0.25, 0.12, 0.06)


def features(name: str, out: Path) -> dict[str, np.ndarray]:
    """Pooled features and class ids of the set's training and test images (computed once into ``out``)."""
    path = out / f"{name}.npz"
    if not path.exists():
        root, train_dir, test_dir = SETS[name]
        ds = read_dataset(root / train_dir)
        test_files = sorted(list_images(root / test_dir))
        truth = {r["filename"]: int(r["label"]) for r in csv.DictReader(open(root / "test_labels.csv"))}
        index = {cid: i for i, cid in enumerate(ds.class_ids)}
        extractor = build_feature_extractor(get_backbone("efficientnet-lite0"), 224)
        x = [extract_features(extractor, build_cache(list(files), 224, out / "cache").images,
                              np.arange(len(files))).values for files in (ds.files, test_files)]
        np.savez(path, x=x[0], y=ds.labels, xt=x[1], yt=np.array([index[truth[f.name]] for f in test_files]))
    return dict(np.load(path))


def long_tailed(y: np.ndarray, seed: int) -> np.ndarray:
    """Indices keeping SHARES of each class (in class order), seeded."""
    keep = [np.random.default_rng([seed, c]).permutation(np.flatnonzero(y == c))[:max(1, round(share * (y == c).sum()))]
            for c, share in zip(np.unique(y), SHARES)]
    return np.sort(np.concatenate(keep))


def fit(kind: str, x, y, vx, vy, num_classes: int, seed: int, keras_s: float):
    recipe = Recipe(head=HeadSpec("softmax" if kind in ("lin", "ksm") else "cosine"))
    weights = recipe.weights(y, num_classes)
    if kind == "lin":
        return fit_linear_head(x, y, vx, vy, num_classes, seed=seed, class_weights=weights)
    if kind == "cos":
        return fit_cosine_head(x, y, vx, vy, num_classes, seed=seed, spec=recipe.head, class_weights=weights)
    return fit_head(x, y, vx, vy, num_classes, time_s=keras_s, seed=seed, recipe=recipe)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="trashnet,flowers5,lt")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--heads", default="lin,cos,kcos,ksm")
    p.add_argument("--keras-s", type=float, default=6.0, help="seconds for the Keras heads")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    out = work_dir(args.out, "heads-")
    for data in args.data.split(","):
        d = features("flowers5" if data == "lt" else data, out)
        num_classes, results = int(d["y"].max()) + 1, {h: [] for h in args.heads.split(",")}
        for seed in [int(s) for s in args.seeds.split(",")]:
            keep = long_tailed(d["y"], seed) if data == "lt" else np.arange(len(d["y"]))
            tr, va = (keep[i] for i in stratified_split(d["y"][keep], 0.15, seed))
            for kind in results:
                start = time.perf_counter()
                head = fit(kind, d["x"][tr], d["y"][tr], d["x"][va], d["y"][va], num_classes, seed, args.keras_s)
                seconds = time.perf_counter() - start
                pred = np.asarray(head.model.predict(d["xt"], verbose=0, batch_size=256)).argmax(1)
                acc = float(np.mean(pred == d["yt"]))
                macro = float(np.mean([np.mean(pred[d["yt"] == c] == c) for c in np.unique(d["yt"])]))
                results[kind].append((acc, macro, seconds))
                print(f"{data} seed {seed} {kind:5s} val {head.val_accuracy:.4f} test {100 * acc:6.2f}%  "
                      f"macro {100 * macro:6.2f}%  {seconds:5.2f}s", flush=True)
        for kind, rows in results.items():
            acc, macro = (statistics.median(r[i] for r in rows) for i in (0, 1))
            print(f"median {data} {kind:5s} test {100 * acc:6.2f}%  macro {100 * macro:6.2f}%  "
                  f"{min(r[2] for r in rows):.2f}-{max(r[2] for r in rows):.2f}s", flush=True)


if __name__ == "__main__":
    main()
