"""Does the budget-sized fine-tuning depth pay? `online` at the same budget with the cut chosen
from the budget (default) and with the last blocks only (`--finetune-cut 12`), one after the other,
on a warm decode cache.

    .venv/bin/python bench/depth.py [--dataset trashnet] [--budgets 12m] [--repeats 1]

Prints per run: the cut, fine-tune epochs run, wall time, budget used and test accuracy.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "submission"))
sys.path.insert(0, str(ROOT / "bench"))

from deadline import DATA, SPLITS, run  # noqa: E402
from timebox.budget import parse_duration  # noqa: E402
from timebox.data.cache import build_cache  # noqa: E402
from timebox.data.layouts import list_images, read_dataset  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--dataset", default="trashnet", choices=sorted(SPLITS))
    p.add_argument("--budgets", default="12m")
    p.add_argument("--repeats", type=int, default=1)
    args = p.parse_args()
    cache_dir = Path(tempfile.mkdtemp())
    train, test = (DATA / args.dataset / d for d in SPLITS[args.dataset])
    build_cache(read_dataset(train).files, 224, cache_dir)  # both arms start from decoded images
    build_cache(list_images(test), 224, cache_dir)
    print(f"depth bench on {args.dataset}, {os.cpu_count()} CPUs, warm decode cache")
    print(f"{'budget':>7} {'cut':>10} {'epochs':>6} {'wall':>8} {'used':>6} {'test acc':>9}")
    for budget in args.budgets.split(","):
        for _ in range(args.repeats):
            for arm, extra in (("chosen", ()), ("12", ("--finetune-cut", "12"))):
                r = run(args.dataset, parse_duration(budget), False, cache_dir, extra)
                phases = json.loads((r["report"] / "timeline.json").read_text())["phases"]
                cut = next((ph.get("cut") for ph in phases if ph["phase"] == "extract"), None)
                ft = json.loads((r["report"] / "history.json").read_text()).get("finetune", {})
                label = f"{cut} ({arm})" if arm == "chosen" else str(cut)
                print(f"{budget:>7} {label:>10} {ft.get('epochs_run', 0):>6} {r['wall_s']:7.1f}s "
                      f"{100 * r['used']:5.1f}% {100 * r['test_accuracy']:8.2f}%", flush=True)
                for note in r["notes"]:
                    print(f"{'':>13}note: {note}")


if __name__ == "__main__":
    main()
