"""Two checkouts of timebox side by side: the same online runs (dataset, budget, seed) alternated between them,
so that a change's effect on accuracy and on the deadline is measured in one session on one machine.

    .venv/bin/python bench/before_after.py BEFORE_ROOT [AFTER_ROOT=.] [--dataset trashnet] [--budgets 2m,4m]
                                           [--seeds 0,1,2]

Each run is ``ROOT/run.sh online --budget B --seed S`` with a warm decode cache shared by both (the first run of
each dataset decodes). Prints one line per run (test accuracy, wall seconds, margin left, source of the output) and
the medians over seeds per budget and checkout, and their difference.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "submission"))

from timebox.budget import parse_duration  # noqa: E402
from timebox.score import score  # noqa: E402

DATA = ROOT.parent / "shared" / "datasets"
SPLITS = {"trashnet": ("train_data", "test_data"), "flowers5": ("train", "test")}


def run(root: Path, dataset: str, budget: str, seed: int, cache: Path) -> dict:
    """One online run of the checkout at ``root``; its test accuracy and summary."""
    train, test = SPLITS[dataset]
    out = Path(tempfile.mkdtemp(prefix="before_after-")) / "OUT"
    start = time.time()
    subprocess.run([str(root / "run.sh"), "online", "--budget", budget, "--seed", str(seed), "--train-dir",
                    str(DATA / dataset / train), "--test-dir", str(DATA / dataset / test), "--out", str(out),
                    "--cache-dir", str(cache)], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.time() - start
    summary = json.loads((out / "report" / "summary.json").read_text())
    acc = score(out / "predictions.csv", DATA / dataset / "test_labels.csv").accuracy
    return {"accuracy": acc, "wall_s": wall, "margin_s": parse_duration(budget) - wall,
            "source": summary["predictions_from"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("before", type=Path)
    p.add_argument("after", type=Path, nargs="?", default=ROOT)
    p.add_argument("--dataset", default="trashnet", choices=sorted(SPLITS))
    p.add_argument("--budgets", default="2m,4m")
    p.add_argument("--seeds", default="0,1,2")
    args = p.parse_args()
    cache = Path(tempfile.mkdtemp(prefix="before_after-cache-"))
    trees = {"before": args.before.resolve(), "after": args.after.resolve()}
    results: dict[tuple[str, str], list[float]] = {}
    for budget in args.budgets.split(","):
        for seed in [int(s) for s in args.seeds.split(",")]:
            for name, root in trees.items():
                r = run(root, args.dataset, budget, seed, cache)
                results.setdefault((budget, name), []).append(r["accuracy"])
                print(f"{budget} seed {seed} {name:6s} {100 * r['accuracy']:6.2f}%  wall {r['wall_s']:6.1f}s  "
                      f"left {r['margin_s']:5.1f}s  from {r['source']}", flush=True)
    for budget in args.budgets.split(","):
        b, a = (statistics.median(results[(budget, n)]) for n in ("before", "after"))
        print(f"{budget}: median before {100 * b:.2f}%  after {100 * a:.2f}%  difference {100 * (a - b):+.2f} points")


if __name__ == "__main__":
    main()
