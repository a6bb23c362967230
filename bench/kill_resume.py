"""The kill test: `online` killed with SIGKILL at random instants, resumed after each kill.

    .venv/bin/python bench/kill_resume.py [--dataset trashnet] [--budget 6m] [--kills 10] [--seed 0]

One run, one budget: the first session is killed at a random instant after its first
predictions exist, then every `--resume` session is killed at a random instant after its start
(3-35 s), `--kills` times in all; the last session runs to its end. After every kill the output
must be complete and valid (a row per test file, a known label each); at the end the sessions'
wall times together must stay within the budget. Prints each kill and the final accuracy.
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import signal
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


def check_output(pred: Path, labels_csv: Path) -> str:
    """'' if pred is complete and valid, else what is wrong."""
    if not pred.exists():
        return "no predictions.csv"
    with open(pred, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    result = score(pred, labels_csv)
    known = {r[0] for r in rows[1:]}
    if rows[0] != ["filename", "label", "name", "confidence"]:
        return f"bad header {rows[0]}"
    if result.missing or len(rows) - 1 != result.total or len(known) != result.total:
        return f"{result.missing} test files missing, {len(rows) - 1} rows"
    return ""


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--dataset", default="trashnet", choices=sorted(SPLITS))
    p.add_argument("--budget", default="6m")
    p.add_argument("--kills", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    rng = random.Random(args.seed)
    budget_s = parse_duration(args.budget)
    train, test = (DATA / args.dataset / d for d in SPLITS[args.dataset])
    labels_csv = DATA / args.dataset / "test_labels.csv"
    work = Path(tempfile.mkdtemp())
    out, cache = work / "OUT", work / "cache"
    base = [str(ROOT / "run.sh"), "online", "--budget", f"{budget_s:.0f}s", "--train-dir", str(train),
            "--test-dir", str(test), "--out", str(out), "--cache-dir", str(cache)]
    env = {k: v for k, v in os.environ.items() if k != "TIMEBOX_START"}
    print(f"kill test on {args.dataset}, budget {budget_s:.0f}s, {args.kills} kills, {os.cpu_count()} CPUs, "
          f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}")
    used, failures = 0.0, 0
    for session in range(args.kills + 1):
        start = time.time()
        proc = subprocess.Popen(base + (["--resume"] if session else []), env=env, stdout=subprocess.DEVNULL,
                                stderr=open(work / f"session{session}.log", "w"), start_new_session=True)
        if session == args.kills:
            proc.wait()
            used += time.time() - start
            break
        if session == 0:
            while not (out / "predictions.csv").exists() and proc.poll() is None:
                time.sleep(0.05)
            kill_at = time.time() + rng.uniform(0.0, 20.0)
        else:
            kill_at = start + rng.uniform(3.0, 35.0)
        while time.time() < kill_at and proc.poll() is None:
            time.sleep(0.02)
        ran_out = proc.poll() is not None
        if not ran_out:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        used += time.time() - start
        problem = check_output(out / "predictions.csv", labels_csv)
        failures += bool(problem)
        acc = score(out / "predictions.csv", labels_csv).accuracy if not problem else 0.0
        print(f"kill {session + 1:2d}: {time.time() - start:5.1f}s into session {session} "
              f"({used:5.1f}s of the budget used){' (it had already exited)' if ran_out else ''}: "
              f"{problem or 'output complete and valid'}, test accuracy {100 * acc:.2f}%", flush=True)
    problem = check_output(out / "predictions.csv", labels_csv)
    acc = score(out / "predictions.csv", labels_csv).accuracy if not problem else 0.0
    print(f"final session: rc={proc.returncode}, {problem or 'output complete and valid'}, test accuracy "
          f"{100 * acc:.2f}%")
    print(f"sessions' wall time together: {used:.1f}s of {budget_s:.0f}s ({used - budget_s:+.1f}s overrun); "
          f"invalid outputs after a kill: {failures}")


if __name__ == "__main__":
    main()
