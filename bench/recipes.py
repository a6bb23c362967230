"""Training recipes against each other: `online` at one budget per recipe and seed, printing test accuracy, macro
accuracy (the mean of the classes') and wall time. Datasets: `lt`, a long-tailed flowers5 (its training classes
subsampled to 100%, 50%, 25%, 12% and 6% of their images, sorted class order, seeded; the test split unchanged),
`flowers5` and `trashnet`.

    .venv/bin/python bench/recipes.py [--data lt] [--budget 4m] [--seeds 0,1] [--recipes none,balanced] [--out DIR]
                                      [--against OTHER_CHECKOUT]

A recipe is a set of settings laid over the defaults (see RECIPES). Runs alternate recipes per seed and share one
decode cache, warmed first by an unscored 1-minute run (the first run otherwise pays the cold start: setup 4.6-5.3 s
against 0.7-0.9 s warm, bench/RESULTS.md, 2026-12-07 11:49Z-); nothing else should run. Recipe "costs" is
`--cost-matrix` with the file `propose-costs` drafts from the "no-refit" run of the same seed (list "no-refit"
before it; a refit run trained on its val images), as a contestant would start one. ``--against`` runs every recipe in another checkout too (named
``RECIPE@other``), right after this one's: a change side by side. Issue 32's goal: the default's
macro accuracy at 4 minutes at least 3 points above the defaults before the issue (recipe "before": class_weight
none, softmax head).
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import numpy as np
from _online import FLOWERS, ROOT, online_run, work_dir
from timebox.train.costs import propose_costs

TRASHNET = ROOT.parent / "shared" / "datasets" / "trashnet"

SHARES = (1.0, 0.5, 0.25, 0.12, 0.06)
RECIPES = {"default": {}, "before": {"class_weight": "none", "head": "softmax"},  # the defaults before issue 32
           "softmax": {"head": "softmax"}, "none": {"class_weight": "none"}, "balanced": {"class_weight": "balanced"},
           "effective": {"class_weight": "effective"}, "focal": {"loss": "focal"},
           "focal-balanced": {"loss": "focal", "class_weight": "balanced"}, "no-smoothing": {"label_smoothing": 0.0},
           "cosine": {"head": "cosine"}, "cosine-mixup": {"head": "cosine", "mixup": 0.2},
           "sampling": {"sampling": "balanced", "class_weight": "none"},
           "mixup": {"mixup": 0.2}, "cutmix": {"cutmix": 1.0}, "hidden": {"head_hidden": 512},
           "step": {"lr_schedule": "step"}, "plateau": {"lr_schedule": "plateau"},
           "crops": {"tta_crops": 4, "refit": False}, "no-refit": {"refit": False},
           # augment acts at the image cut only: read "augment" against "image-cut" (flowers5's photos are 128 px)
           "image-cut": {"finetune_cut": 0, "size": 128},
           "augment": {"finetune_cut": 0, "size": 128, "augment": "crop,flip,color,erase"},
           "randaugment": {"finetune_cut": 0, "size": 128, "augment": "crop,randaugment"}}


def long_tailed(dest: Path, seed: int = 0) -> Path:
    """dest/train/<class>/ (symbolic links to a seeded share of each class) and dest/class_index.txt."""
    rng = np.random.default_rng(seed)
    classes = sorted(p for p in (FLOWERS / "train").iterdir() if p.is_dir())
    for share, folder in zip(SHARES, classes):
        files = sorted(folder.iterdir())
        keep = rng.choice(len(files), max(1, round(share * len(files))), replace=False)
        (dest / "train" / folder.name).mkdir(parents=True, exist_ok=True)
        for i in sorted(keep):
            (dest / "train" / folder.name / files[i].name).symlink_to(files[i])
        print(f"{folder.name}: {len(keep)} of {len(files)}", flush=True)
    (dest / "class_index.txt").write_text((FLOWERS / "class_index.txt").read_text())
    return dest / "train"


def overrides(name: str, seed: int, out: Path) -> dict:
    """The settings recipe ``name`` lays over the defaults for ``seed``; "costs" drafts its file first."""
    if name != "costs":
        return RECIPES[name]
    source = out / f"no-refit-{seed}" / "report" / "confusion_val.csv"  # a refit run's val images were trained on
    if not source.exists():
        raise SystemExit(f"recipe costs: {source} is missing; list recipe no-refit before costs")
    matrix = out / f"costs-{seed}-matrix.json"
    matrix.write_text(json.dumps(propose_costs(source)))
    return {"cost_matrix": str(matrix)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="lt", choices=("lt", "flowers5", "trashnet"))
    p.add_argument("--budget", default="4m")
    p.add_argument("--seeds", default="0,1")
    p.add_argument("--recipes", default="none,balanced,effective")
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--against", type=Path, default=None, help="another checkout: each recipe run there too")
    args = p.parse_args()
    out = work_dir(args.out, "recipes-")
    train, test = {"lt": lambda: (long_tailed(out / "flowers5-lt"), FLOWERS),
                   "flowers5": lambda: (FLOWERS / "train", FLOWERS),
                   "trashnet": lambda: (TRASHNET / "train_data", TRASHNET)}[args.data]()
    where = {"test": test / ("test_data" if args.data == "trashnet" else "test"), "labels": test / "test_labels.csv"}
    roots = {"": ROOT, **({"@other": args.against.resolve()} if args.against else {})}
    runs = [(name, tag) for name in args.recipes.split(",") for tag in roots]
    names = [name + tag for name, tag in runs]
    results: dict[str, list[tuple[float, float, float]]] = {n: [] for n in names}
    online_run(train, out / "warm-up", "1m", 0, out / "cache", **where)
    for seed in [int(s) for s in args.seeds.split(",")]:
        for name, tag in runs:
            config = out / f"{name}{tag}-{seed}.json"
            config.write_text(json.dumps(overrides(name, seed, out)))
            run = online_run(train, out / f"{name}{tag}-{seed}", args.budget, seed, out / "cache",
                             ["--config", str(config)], root=roots[tag], **where)
            acc, macro, wall = run.accuracy, run.macro_accuracy, run.wall_s
            results[name + tag].append((acc, macro, wall))
            print(f"{args.data} {args.budget} seed {seed} {name + tag:15s} accuracy {100 * acc:6.2f}%  "
                  f"macro {100 * macro:6.2f}%  wall {wall:5.1f}s", flush=True)
    base = statistics.median(m for _, m, _ in results[names[0]])
    for name in names:
        acc, macro = (statistics.median(r[i] for r in results[name]) for i in (0, 1))
        print(f"median {name:15s} accuracy {100 * acc:6.2f}%  macro {100 * macro:6.2f}%  "
              f"macro vs {names[0]}: {100 * (macro - base):+.2f} points", flush=True)


if __name__ == "__main__":
    main()
