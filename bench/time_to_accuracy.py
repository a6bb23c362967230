"""Time to accuracy: the contestants' baseline against timebox, same data, backbone and weights.

    .venv/bin/python bench/time_to_accuracy.py [--dataset trashnet] [--budgets 2m,4m,8m] [--seeds 0,1,2]

The baseline re-creates the contest starter scripts: the frozen backbone (EfficientNet-Lite0,
ImageNet weights, 224 px) runs on every image in every epoch, then Flatten + Dense 256 + Dense
128 + softmax, Adam, ReduceLROnPlateau + EarlyStopping, a fixed 30 epochs, the best val epoch
kept (ModelCheckpoint). It trains once for the largest budget; its accuracy at a budget is the
test accuracy of its best-val epoch among those finished by then. It is treated generously: it
gets the decoded images for free and its clock leaves out the test evaluations added here to
trace it. Same train/val split as timebox (stratified 85/15, by the seed).

timebox runs `./run.sh online --seed S` at each budget (warm decode cache, as the baseline gets);
the bench copies OUT/predictions.csv every time it changes, so its test accuracy over time is known.

Prints both accuracies per budget and the time each needs to reach the baseline's best accuracy.
With several seeds (each: the baseline's split, initialisation and shuffling, and timebox's split
and shuffling), every seed is one baseline run and one timebox run per budget, and the gains are
also given between the medians over seeds: single runs spread over about 2 test points.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "submission"))

import keras  # noqa: E402
import numpy as np  # noqa: E402

from timebox.budget import parse_duration  # noqa: E402
from timebox.data.cache import build_cache  # noqa: E402
from timebox.data.layouts import list_images, read_dataset  # noqa: E402
from timebox.data.splits import stratified_split  # noqa: E402
from timebox.models.registry import build_extractor, get_backbone  # noqa: E402
from timebox.score import read_labels, score  # noqa: E402

DATA = ROOT.parent / "shared" / "datasets"
SPLITS = {"trashnet": ("train_data", "test_data"), "flowers5": ("train", "test")}


def baseline(train_dir: Path, test_dir: Path, labels_csv: Path, cache_dir: Path, limit_s: float,
             seed: int = 0) -> list[dict]:
    """Train the baseline for up to ``limit_s`` of its own clock; one record per epoch."""
    ds = read_dataset(train_dir)
    test_files = list_images(test_dir)
    train_cache, test_cache = build_cache(ds.files, 224, cache_dir), build_cache(test_files, 224, cache_dir)
    good = np.array([i for i, e in enumerate(train_cache.errors) if e is None])
    tr, va = stratified_split(ds.labels[good], 0.15, seed)
    tr_idx, va_idx = np.sort(good[tr]), np.sort(good[va])
    x_tr, y_tr = np.asarray(train_cache.images[tr_idx]), ds.labels[tr_idx]
    x_va, y_va = np.asarray(train_cache.images[va_idx]), ds.labels[va_idx]
    truth = read_labels(labels_csv)
    root = test_dir.resolve()
    names = [f.relative_to(root).as_posix() for f in test_files]
    y_te = np.array([ds.class_ids.index(int(truth[n])) for n in names])
    x_te = np.asarray(test_cache.images)

    keras.utils.set_random_seed(seed)
    full = build_extractor(get_backbone("efficientnet-lite0"), 224, "imagenet").full
    backbone = next(layer for layer in full.layers if isinstance(layer, keras.Model))
    fmap = keras.Model(backbone.input, backbone.get_layer("head_relu").output)  # include_top=False, no pooling
    fmap.trainable = False
    inputs = keras.Input((224, 224, 3), dtype="uint8")
    x = full.get_layer("preprocess")(inputs)
    x = keras.layers.Flatten()(fmap(x, training=False))
    x = keras.layers.Dense(256, activation="relu")(x)
    x = keras.layers.Dense(128, activation="relu")(x)
    model = keras.Model(inputs, keras.layers.Dense(len(ds.class_ids), activation="softmax")(x))
    model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])

    class Trace(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.records, self.clock, self.since = [], 0.0, time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.clock += time.perf_counter() - self.since
            test_acc = float((self.model.predict(x_te, batch_size=32, verbose=0).argmax(1) == y_te).mean())
            self.records.append({"epoch": epoch + 1, "clock_s": self.clock, "val_accuracy": float(logs["val_accuracy"]),
                                 "test_accuracy": test_acc})
            print(f"  baseline epoch {epoch + 1}: {self.clock:6.1f}s val {logs['val_accuracy']:.4f} test {test_acc:.4f}",
                  flush=True)
            if self.clock >= limit_s:
                self.model.stop_training = True
            self.since = time.perf_counter()

    trace = Trace()
    callbacks = [keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=2),
                 keras.callbacks.EarlyStopping(monitor="val_accuracy", patience=5), trace]
    model.fit(x_tr, y_tr, batch_size=32, epochs=30, validation_data=(x_va, y_va), callbacks=callbacks, verbose=0)
    return trace.records


def baseline_at(records: list[dict], budget_s: float) -> dict | None:
    """The baseline's kept model at ``budget_s``: its best-val epoch among those finished by then."""
    done = [r for r in records if r["clock_s"] <= budget_s]
    return max(done, key=lambda r: r["val_accuracy"]) if done else None


def timebox(train_dir: Path, test_dir: Path, labels_csv: Path, cache_dir: Path, budget_s: float,
            seed: int = 0) -> list[dict]:
    """Run `online` once; the test accuracy of every version of predictions.csv, by time since start."""
    work = Path(tempfile.mkdtemp())
    out, snaps = work / "OUT", work / "snapshots"
    snaps.mkdir()
    cmd = [str(ROOT / "run.sh"), "online", "--budget", f"{budget_s:.0f}s", "--train-dir", str(train_dir),
           "--test-dir", str(test_dir), "--out", str(out), "--cache-dir", str(cache_dir), "--seed", str(seed)]
    env = {k: v for k, v in os.environ.items() if k != "TIMEBOX_START"}
    versions: list[tuple[float, Path]] = []
    stop = threading.Event()
    start = time.time()

    def watch() -> None:
        last = None
        while not stop.wait(0.2):
            try:
                mtime = (out / "predictions.csv").stat().st_mtime
            except FileNotFoundError:
                continue
            if mtime != last:
                last = mtime
                copy = snaps / f"{len(versions):03d}.csv"
                shutil.copy(out / "predictions.csv", copy)
                versions.append((mtime - start, copy))

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    rc = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode
    if rc != 0:
        print(f"  timebox {budget_s:.0f}s: exit {rc}", flush=True)
    stop.set()
    watcher.join()
    return [{"time_s": t, "test_accuracy": score(p, labels_csv).accuracy, "wall_s": time.time() - start}
            for t, p in versions]


def seed_list(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"seeds are comma-separated integers, e.g. 0,1,2 (got {text!r})") from None
    if len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"seeds must differ (got {text!r})")
    return seeds


def one_seed(seed: int, data: tuple[Path, Path, Path], cache_dir: Path, budgets: list[tuple[str, float]]) -> dict:
    """The baseline and a timebox run per budget with ``seed``; prints, and returns per budget, the baseline's and
    timebox's test accuracies and the share of the baseline's time timebox took to reach its best (None: never)."""
    train_dir, test_dir, labels_csv = data
    print(f"seed {seed}: baseline (frozen backbone every epoch, Flatten+Dense256/128, Adam, "
          "ReduceLROnPlateau+EarlyStopping):", flush=True)
    records = baseline(train_dir, test_dir, labels_csv, cache_dir, max(b for _, b in budgets), seed)
    runs = {}
    for name, budget_s in budgets:
        runs[name] = timebox(train_dir, test_dir, labels_csv, cache_dir, budget_s, seed)
        trace = ", ".join(f"{v['time_s']:.0f}s:{100 * v['test_accuracy']:.1f}%" for v in runs[name])
        print(f"  timebox {name}: predictions over time {trace}", flush=True)

    result = {}
    print(f"{'seed':>5} {'budget':>7} {'baseline':>9} {'timebox':>8} {'gain':>7}")
    for name, budget_s in budgets:
        kept = baseline_at(records, budget_s)
        base = kept["test_accuracy"] if kept else float("nan")
        tb = runs[name][-1]["test_accuracy"] if runs[name] else float("nan")
        result[name] = {"baseline": base, "timebox": tb, "share": None}
        print(f"{seed:>5} {name:>7} {100 * base:8.2f}% {100 * tb:7.2f}% {100 * (tb - base):+6.2f}")
    name, budget_s = budgets[-1]
    kept = baseline_at(records, budget_s)
    if kept:
        target = kept["test_accuracy"]
        print(f"baseline's best within {name}: {100 * target:.2f}% after {kept['clock_s']:.0f}s of training "
              f"(epoch {kept['epoch']})")
        for run_name, versions in runs.items():
            reached = next((v["time_s"] for v in versions if v["test_accuracy"] >= target), None)
            if reached is None:
                print(f"timebox ({run_name} run) never reached it")
            else:
                result[run_name]["share"] = reached / kept["clock_s"]
                print(f"timebox ({run_name} run) reached it after {reached:.0f}s from its command's start: "
                      f"{reached / kept['clock_s']:.2f} of the baseline's time")
    return result


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--dataset", default="trashnet", choices=sorted(SPLITS))
    p.add_argument("--budgets", default="2m,4m,8m")
    p.add_argument("--seeds", type=seed_list, default=[0], help="comma-separated, e.g. 0,1,2 (default: 0)")
    args = p.parse_args()
    train_dir, test_dir = (DATA / args.dataset / d for d in SPLITS[args.dataset])
    data = (train_dir, test_dir, DATA / args.dataset / "test_labels.csv")
    budgets = [(b, parse_duration(b)) for b in args.budgets.split(",")]
    cache_dir = Path(tempfile.mkdtemp())
    print(f"time to accuracy on {args.dataset}, {os.cpu_count()} CPUs, {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}")
    results = [one_seed(seed, data, cache_dir, budgets) for seed in args.seeds]
    if len(results) > 1:
        print(f"medians over seeds {','.join(map(str, args.seeds))}:")
        print(f"{'budget':>7} {'baseline':>9} {'timebox':>8} {'gain':>7}  gains by seed")
        for name, _ in budgets:
            base = float(np.median([r[name]["baseline"] for r in results]))
            tb = float(np.median([r[name]["timebox"] for r in results]))
            gains = " ".join(f"{100 * (r[name]['timebox'] - r[name]['baseline']):+.2f}" for r in results)
            print(f"{name:>7} {100 * base:8.2f}% {100 * tb:7.2f}% {100 * (tb - base):+6.2f}  {gains}")
        print("share of the baseline's time timebox took to reach the baseline's best (never: inf):")
        for name, _ in budgets:
            shares = [r[name]["share"] if r[name]["share"] is not None else float("inf") for r in results]
            print(f"{name:>7} median {np.median(shares):.2f}  by seed " + " ".join(f"{x:.2f}" for x in shares))


if __name__ == "__main__":
    main()
