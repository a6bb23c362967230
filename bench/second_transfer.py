"""The second transfer: ``pretrain`` on half of flowers5's training images (the contestant's own, A), then ``online``
on the other half (the judge's, B) from that model and from ImageNet, side by side per budget and seed, scored on
flowers5 test.

    .venv/bin/python bench/second_transfer.py [--pretrain 20m] [--budgets 2m,4m,8m] [--seeds 0,1] [--out DIR]

Prints one line per online run, the medians per budget and start, and the gain (issue 31's goal: at least +1.5
points at 4 minutes). The runs alternate (ImageNet, pretrained) and share one warm decode cache; nothing else
should run.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import time
from pathlib import Path

import numpy as np

from _online import FLOWERS, ROOT, online_run, work_dir
from timebox.data.layouts import read_dataset
from timebox.data.splits import stratified_split


def halves(folder: Path, seed: int = 0) -> tuple[Path, Path]:
    """flowers5/train as two disjoint stratified halves A and B (class folders of links; class_index.txt beside)."""
    ds = read_dataset(FLOWERS / "train")
    a_idx, b_idx = stratified_split(ds.labels, 0.5, seed)
    for name, idx in (("A", a_idx), ("B", b_idx)):
        for i in idx:
            target = folder / name / ds.class_names[ds.labels[i]]
            target.mkdir(parents=True, exist_ok=True)
            os.symlink(ds.files[i].resolve(), target / ds.files[i].name)
    shutil.copy(FLOWERS / "class_index.txt", folder / "class_index.txt")  # one folder up, as flowers5 has it
    return folder / "A", folder / "B"


def pretrain(data: Path, budget: str, out: Path, models: Path) -> Path:
    start = time.time()
    subprocess.run([str(ROOT / "run.sh"), "pretrain", "--data", str(data), "--budget", budget, "--out", str(out),
                    "--name", "flowers_a", "--models-dir", str(models)], check=True,
                   stdout=open(out.with_suffix(".log"), "w"), stderr=subprocess.STDOUT)
    print(f"pretrain on A ({budget}): {time.time() - start:.0f}s, {models / 'flowers_a'}", flush=True)
    return models / "flowers_a"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pretrain", default="20m")
    p.add_argument("--budgets", default="2m,4m,8m")
    p.add_argument("--seeds", default="0,1")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    out = work_dir(args.out, "second_transfer-")
    a, b = halves(out / "data")
    model = pretrain(a, args.pretrain, out / "PRE", out / "models")
    cache, results = out / "cache", {}
    for budget in args.budgets.split(","):
        for seed in [int(s) for s in args.seeds.split(",")]:
            for start, init in (("imagenet", "imagenet"), ("pretrained", str(model))):
                acc = online_run(b, out / f"{budget}-{seed}-{start}", budget, seed, cache, ["--init", init]).accuracy
                results.setdefault((budget, start), []).append(acc)
                print(f"online on B {budget} seed {seed} from {start:10s} {100 * acc:6.2f}%", flush=True)
    for budget in args.budgets.split(","):
        i, t = (statistics.median(results[(budget, s)]) for s in ("imagenet", "pretrained"))
        gains = np.subtract(results[(budget, "pretrained")], results[(budget, "imagenet")])
        print(f"{budget}: median ImageNet {100 * i:.2f}%  pretrained {100 * t:.2f}%  gain {100 * (t - i):+.2f} points "
              f"(per seed: {', '.join(f'{100 * g:+.2f}' for g in gains)})")


if __name__ == "__main__":
    main()
