"""A budget too short for the input size: shrinking the size against dropping training images, side by side.

    .venv/bin/python bench/image_size.py [--budget 45s] [--size 320] [--pairs 2] [trashnet flowers5]

Each pair runs `online --size SIZE` twice, interleaved: with ``--min-size SIZE`` (the size is kept,
so the training images that no longer fit are left out, as before the shrink existed), then with the
default ``--min-size`` (the size shrinks until every image fits). Every run gets a fresh decode cache
holding SIZE, built before it starts; a shrunk run decodes again at its size within its budget.
Prints for each run: exit code, the input size used, training images extracted, test accuracy, wall
time and budget used.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from deadline import DATA, SPLITS, run  # noqa: E402  (bench/deadline.py: one `online` run and its figures)

from timebox.budget import parse_duration  # noqa: E402  (deadline put submission/ on the path)
from timebox.data.cache import build_cache  # noqa: E402
from timebox.data.layouts import list_images  # noqa: E402


def extracted(report: Path) -> tuple[int | None, str]:
    """The input size of the extraction and its "activations: ..." line from the log."""
    phases = json.loads((report / "timeline.json").read_text())["phases"]
    extract = next((p for p in phases if p["phase"] == "extract"), {})
    log = (report / "log.txt").read_text().splitlines()
    line = next((ln.split("] ", 1)[1] for ln in log if "] activations: " in ln), "")
    return extract.get("size"), line


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("datasets", nargs="*", default=["trashnet"])
    p.add_argument("--budget", default="45s")
    p.add_argument("--size", type=int, default=320)
    p.add_argument("--pairs", type=int, default=2)
    args = p.parse_args()
    budget_s = parse_duration(args.budget)
    print(f"image size bench, budget {budget_s:.0f}s, --size {args.size}")
    print(f"{'dataset':>9} {'min-size':>8} {'rc':>3} {'size':>5} {'test acc':>8} {'wall':>7} {'used':>6}  extraction")
    for dataset in args.datasets:
        for _ in range(args.pairs):
            for min_size in (args.size, None):
                cache_dir = Path(tempfile.mkdtemp())
                for part in SPLITS[dataset]:
                    build_cache(list_images(DATA / dataset / part), args.size, cache_dir)
                extra = ("--size", str(args.size)) + (("--min-size", str(min_size)) if min_size else ())
                r = run(dataset, budget_s, False, cache_dir, extra)
                size, line = extracted(r["report"]) if (r["report"] / "timeline.json").exists() else (None, "")
                print(f"{dataset:>9} {min_size or 'default':>8} {r['rc']:>3} {size or '-':>5} "
                      f"{100 * r['test_accuracy']:7.2f}% {r['wall_s']:6.1f}s {100 * r['used']:5.1f}%  {line}",
                      flush=True)


if __name__ == "__main__":
    main()
