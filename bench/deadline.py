"""Does `online` meet its deadline, and use it? Each budget once normally and once with a CPU hog
started mid-run (a competing process spinning on one core), on a real dataset.

    .venv/bin/python bench/deadline.py [--dataset trashnet] [--budgets 2m,4m,8m]

Prints per run: wall time (from the command's start, as a judge measures it), overrun (must never
be above 0), share of the budget used, and test accuracy.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "submission"))

from timebox.budget import parse_duration  # noqa: E402
from timebox.score import score  # noqa: E402

DATA = ROOT.parent / "shared" / "datasets"
SPLITS = {"trashnet": ("train_data", "test_data"), "flowers5": ("train", "test")}


def _spin() -> None:
    while True:
        pass


def run(dataset: str, budget_s: float, hog: bool, cache_dir: Path, extra: tuple[str, ...] = ()) -> dict:
    """One `online` run (``extra``: more of its flags); its figures, and the report's folder as "report"."""
    train, test = (DATA / dataset / d for d in SPLITS[dataset])
    out = Path(tempfile.mkdtemp()) / "OUT"
    cmd = [str(ROOT / "run.sh"), "online", "--budget", f"{budget_s:.0f}s", "--train-dir", str(train),
           "--test-dir", str(test), "--out", str(out), "--cache-dir", str(cache_dir), *extra]
    env = {k: v for k, v in os.environ.items() if k != "TIMEBOX_START"}
    hog_proc = multiprocessing.Process(target=_spin, daemon=True)
    timer = threading.Timer(budget_s / 2, hog_proc.start) if hog else None
    start = time.time()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if timer:
        timer.start()
    rc = proc.wait(timeout=budget_s + 120)
    wall = time.time() - start
    if timer:
        timer.cancel()
        if hog_proc.is_alive():
            hog_proc.kill()
    summary = json.loads((out / "report" / "summary.json").read_text()) if (out / "report" / "summary.json").exists() else {}
    acc = score(out / "predictions.csv", DATA / dataset / "test_labels.csv").accuracy if (out / "predictions.csv").exists() else 0.0
    return {"budget_s": budget_s, "hog": hog, "rc": rc, "wall_s": wall, "overrun_s": wall - budget_s,
            "used": wall / budget_s, "test_accuracy": acc, "notes": summary.get("notes", []), "report": out / "report"}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--dataset", default="trashnet", choices=sorted(SPLITS))
    p.add_argument("--budgets", default="2m,4m,8m")
    args = p.parse_args()
    cache_dir = Path(tempfile.mkdtemp())  # the first run decodes; later runs reuse the cache
    print(f"deadline bench on {args.dataset}, {os.cpu_count()} CPUs")
    print(f"{'budget':>7} {'hog':>4} {'rc':>3} {'wall':>8} {'overrun':>8} {'used':>6} {'test acc':>9}")
    for budget in args.budgets.split(","):
        for hog in (False, True):
            r = run(args.dataset, parse_duration(budget), hog, cache_dir)
            print(f"{budget:>7} {'yes' if hog else 'no':>4} {r['rc']:>3} {r['wall_s']:7.1f}s {r['overrun_s']:+7.1f}s "
                  f"{100 * r['used']:5.1f}% {100 * r['test_accuracy']:8.2f}%", flush=True)
            for note in r["notes"]:
                print(f"{'':>13}note: {note}")


if __name__ == "__main__":
    main()
