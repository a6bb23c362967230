"""Does the ensemble beat its best single member on test, within the latency budget?

    .venv/bin/python bench/ensemble.py [--budget 8m] [--latency-ms 500] [--zoom-share 0.1] [trashnet flowers5]
    .venv/bin/python bench/ensemble.py --run OUT:trashnet [--run OUT:flowers5]   # analyse finished runs

Runs `online --no-refit` on each dataset (a run with a refit has no vote), or reads runs already made (e.g. by
bench/acceptance.sh), then prints:
the rule chosen on held-out val and why, every candidate (checkpoint x test-time view) with its val
accuracy, weight and test accuracy, the best single member (by val accuracy) on test, the plain
average and plain majority of the candidates on test (baselines), the output (ensemble or single)
on test, and the p95 per-image latency against the budget.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "submission"))

import numpy as np  # noqa: E402

from timebox.budget import parse_duration  # noqa: E402
from timebox.data.layouts import list_images  # noqa: E402
from timebox.predict import LABELS_FILE, LabelMap  # noqa: E402
from timebox.score import read_labels, score  # noqa: E402

DATA = ROOT.parent / "shared" / "datasets"
SPLITS = {"trashnet": ("train_data", "test_data"), "flowers5": ("train", "test")}


def run_online(dataset: str, budget_s: float, latency_ms: float, zoom_share: float | None) -> Path:
    train, test = (DATA / dataset / d for d in SPLITS[dataset])
    out = Path(tempfile.mkdtemp()) / "OUT"
    env = {k: v for k, v in os.environ.items() if k != "TIMEBOX_START"}
    subprocess.run([str(ROOT / "run.sh"), "online", "--budget", f"{budget_s:.0f}s", "--train-dir", str(train),
                    "--test-dir", str(test), "--out", str(out), "--latency-ms", f"{latency_ms:g}", "--no-refit",
                    *([] if zoom_share is None else ["--zoom-share", f"{zoom_share:g}"])],
                   env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    return out


def test_scorer(out: Path, dataset: str) -> Callable[[np.ndarray], float]:
    """Test accuracy of probabilities (N, C) in the order run ``out`` predicted ``dataset``'s test images."""
    label_map = LabelMap.load(out / "model" / LABELS_FILE)
    truth = read_labels(DATA / dataset / "test_labels.csv")
    test_dir = (DATA / dataset / SPLITS[dataset][1]).resolve()
    names = [f.relative_to(test_dir).as_posix() for f in list_images(test_dir)]
    ids = np.array([str(i) for i in label_map.class_ids])
    y = np.array([truth.get(n, "") for n in names])
    return lambda p: float(np.mean(ids[p.argmax(1)] == y[: len(p)]))


def analyse(out: Path, dataset: str) -> None:
    labels_csv = DATA / dataset / "test_labels.csv"
    history = json.loads((out / "report" / "history.json").read_text())
    ens = history.get("ensemble") or {}
    print(f"== {dataset} ({out})")
    if "rule" not in ens:
        summary = json.loads((out / "report" / "summary.json").read_text())
        print("  no ensemble phase: " + "; ".join(n for n in summary["notes"] if "ensemble" in n or "refit" in n))
        if summary.get("p95_latency_ms_one_view"):
            print(f"  p95 latency of one view (the backbone and head): {summary['p95_latency_ms_one_view']:.0f} ms a "
                  f"image; the output runs {2 if summary['tta'] else 1} view(s)")
        return
    print(f"  rule: {ens['rule']} ({ens['reason']})")
    print("  held-out val accuracy per rule: " + ", ".join(f"{k} {v:.4f}" for k, v in ens["heldout"].items()))
    probs_file = out / "report" / "ensemble_test_probs.npz"
    test = dict(np.load(probs_file)) if probs_file.exists() else {}
    test_acc = test_scorer(out, dataset)
    print(f"  {'candidate':<34} {'val acc':>8} {'weight':>7} {'test acc':>9}")
    best = max(ens["candidates"], key=lambda c: c["val_accuracy"])
    for c in ens["candidates"]:
        key = f"{c['source']} ({c['view']})"
        t = f"{100 * test_acc(test[key]):8.2f}%" if key in test else "        -"
        print(f"  {key:<34} {c['val_accuracy']:8.4f} {c['weight']:7.3f} {t}")
    best_key = f"{best['source']} ({best['view']})"
    output = score(out / "predictions.csv", labels_csv).accuracy
    if best_key in test:
        print(f"  best single member by val ({best_key}): test {100 * test_acc(test[best_key]):.2f}%")
    else:
        print(f"  best single member by val ({best_key}): not predicted on test (its zoomed view is not in the vote)")
    if test:
        stacked = np.stack(list(test.values()))  # (M, N, C)
        print(f"  plain average of the candidates predicted on test (baseline): test "
              f"{100 * test_acc(stacked.mean(0)):.2f}%")
        votes = np.eye(stacked.shape[2])[stacked.argmax(2)].sum(0)  # (N, C) votes; ties: the lower class id
        print(f"  plain majority of the same candidates (baseline): test {100 * test_acc(votes):.2f}%")
    summary = json.loads((out / "report" / "summary.json").read_text())
    print(f"  output ({summary['predictions_from']}): test {100 * output:.2f}%")
    for m in ens.get("members", []):
        latency = f"{m['p95_latency_ms']:.0f} ms" if m.get("p95_latency_ms") else "not measured"
        val = f"{m['val_accuracy']:.4f}" if "val_accuracy" in m else "-"
        print(f"  member {m['source']} ({m['view']}): weight {m['weight']:.3f}, val {val}, p95 latency alone {latency}")
    budget = ens.get("latency_budget_ms")
    if "p95_latency_ms" in ens:
        print(f"  p95 latency of the exported model: {ens['p95_latency_ms']:.0f} ms a image"
              + (f" (budget {budget:.0f} ms: {'met' if ens['p95_latency_ms'] <= budget else 'NOT met'})" if budget else ""))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("datasets", nargs="*", help=f"of {', '.join(SPLITS)} (default: both)")
    p.add_argument("--budget", default="8m")
    p.add_argument("--latency-ms", type=float, default=500.0)
    p.add_argument("--zoom-share", type=float, default=None, help="passed to online (default: its own)")
    p.add_argument("--run", action="append", default=[], help="OUT:DATASET of a finished online run")
    args = p.parse_args()
    runs = [(Path(r.rsplit(":", 1)[0]), r.rsplit(":", 1)[1]) for r in args.run]
    unknown = {d for _, d in runs} | set(args.datasets) - set(SPLITS)
    if unknown - set(SPLITS):
        p.error(f"unknown dataset(s) {', '.join(sorted(unknown - set(SPLITS)))}; known: {', '.join(SPLITS)}")
    if not runs:
        budget_s = parse_duration(args.budget)
        zoom = "" if args.zoom_share is None else f" --zoom-share {args.zoom_share:g}"
        print(f"online --budget {args.budget} --latency-ms {args.latency_ms:g}{zoom} ({os.cpu_count()} CPUs)")
        runs = [(run_online(d, budget_s, args.latency_ms, args.zoom_share), d)
                for d in (args.datasets or ["trashnet", "flowers5"])]
    for out, dataset in runs:
        analyse(out, dataset)


if __name__ == "__main__":
    main()
