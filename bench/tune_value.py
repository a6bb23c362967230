"""What tuning is worth: ``tune`` on a 1,000/300 subsample of flowers5's training images, then ``online`` on the
full training set with the tuned settings and with the defaults, side by side per seed, scored on flowers5 test.

    .venv/bin/python bench/tune_value.py [--tune-budget 30m] [--online-budget 8m] [--seeds 0,1] [--no-target]
                                         [--out DIR]

Prints one line per online run, the medians of each and the gain (issue 30's goal: at least +1 point); none when
the search kept the defaults (its best_config.json is ``{}``, so both runs would be the same command). The
online runs alternate (defaults, tuned) per seed and share one warm decode cache; nothing else should run. The
search is told the online run it stands for (``--target BUDGET:IMAGES``), unless ``--no-target``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import time
from pathlib import Path

from _online import FLOWERS, ROOT, online_run, work_dir
from timebox.data.layouts import read_dataset


def tune(out: Path, budget: str, target: str | None) -> Path:
    """The search (told the online run it stands for: ``target``, BUDGET:IMAGES); the path of its
    best_config.json."""
    start = time.time()
    subprocess.run([str(ROOT / "run.sh"), "tune", "--data", str(FLOWERS / "train"), "--budget", budget,
                    "--out", str(out), *(["--target", target] if target else [])],
                   check=True, stdout=open(out.with_suffix(".log"), "w"), stderr=subprocess.STDOUT)
    best = out / "best_config.json"
    print(f"tune: {time.time() - start:.0f}s, best settings {best.read_text().strip()}", flush=True)
    return best


def online(out: Path, budget: str, seed: int, cache: Path, config: Path | None) -> float:
    """One online run on the full flowers5 train; its test accuracy. The defaults must not pick up a shipped
    submission/config.json: an empty --config is the plain run."""
    empty = out.parent / "defaults.json"
    empty.write_text("{}\n")
    return online_run(FLOWERS / "train", out, budget, seed, cache, ["--config", str(config or empty)]).accuracy


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tune-budget", default="30m")
    p.add_argument("--online-budget", default="8m")
    p.add_argument("--seeds", default="0,1")
    p.add_argument("--no-target", action="store_true", help="plan the search's rungs from its budget alone")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    out = work_dir(args.out, "tune_value-")
    target = None if args.no_target else f"{args.online_budget}:{len(read_dataset(FLOWERS / 'train').files)}"
    best = tune(out / "TUNE", args.tune_budget, target)
    if json.loads(best.read_text()) == {}:
        print("the search kept the defaults: the tuned online run is the defaults' run (gain 0 by construction); "
              "no online runs")
        return
    cache, results = out / "cache", {"defaults": [], "tuned": []}
    for seed in [int(s) for s in args.seeds.split(",")]:
        for name, config in (("defaults", None), ("tuned", best)):
            acc = online(out / f"{name}-{seed}", args.online_budget, seed, cache, config)
            results[name].append(acc)
            print(f"online {args.online_budget} seed {seed} {name:8s} {100 * acc:6.2f}%", flush=True)
    d, t = (statistics.median(results[n]) for n in ("defaults", "tuned"))
    gains = [b - a for a, b in zip(results["defaults"], results["tuned"])]
    print(f"median defaults {100 * d:.2f}%  tuned {100 * t:.2f}%  gain {100 * (t - d):+.2f} points "
          f"(per seed: {', '.join(f'{100 * g:+.2f}' for g in gains)}); settings {json.loads(best.read_text())}")


if __name__ == "__main__":
    main()
