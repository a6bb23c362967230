"""The anytime promise under faults: kills at random instants, runs sharing one cache, a group SIGTERM
while decoding, a read-only HOME. Every run must leave a complete predictions.csv that another user can
read, and every entry of the shared decode cache must equal a fresh decode.

    .venv/bin/python bench/faults.py [--kills 20] [--budget 2m] [--shared 4] [--seed 0] [--only kills,...]

Runs as root (as here) and uses `setpriv` to act as user nobody to read the outputs as another user; the
read-only-HOME case runs in a user and mount namespace where HOME is mounted read-only. Prints one line per
run and the counts at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "submission"))
sys.path.insert(0, str(ROOT / "bench"))

from kill_resume import check_output  # noqa: E402
from timebox.budget import parse_duration  # noqa: E402
from timebox.data.cache import cache_key  # noqa: E402
from timebox.data.decode import decode_image  # noqa: E402
from timebox.data.layouts import list_images, read_dataset  # noqa: E402
from timebox.score import score  # noqa: E402

DATA = ROOT.parent / "shared" / "datasets" / "trashnet"
TRAIN, TEST, LABELS = DATA / "train_data", DATA / "test_data", DATA / "test_labels.csv"
NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
EXPORT_SIGNS = ("tmp", "partial", ".new", ".old")  # names an export or atomic write in progress carries


@dataclass
class Outcome:
    """What one run left behind."""

    name: str
    problem: str  # '' when predictions.csv is complete, valid and readable by another user
    accuracy: float
    note: str = ""


def command(out: Path, budget_s: float, seed: int, cache: Path | None) -> list[str]:
    """The online command line of one run."""
    cmd = [str(ROOT / "run.sh"), "online", "--budget", f"{budget_s:.0f}s", "--seed", str(seed),
           "--train-dir", str(TRAIN), "--test-dir", str(TEST), "--out", str(out)]
    return cmd + (["--cache-dir", str(cache)] if cache else [])


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without a budget start of ours, plus extra."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIMEBOX_START")}
    return {**env, **extra}


def outcome(name: str, out: Path, note: str = "") -> Outcome:
    """Checks OUT/predictions.csv: complete and valid, then readable as user nobody."""
    pred = out / "predictions.csv"
    problem = check_output(pred, LABELS)
    if not problem:
        seen = subprocess.run(NOBODY + ["cat", str(pred)], capture_output=True)
        if seen.returncode != 0 or seen.stdout != pred.read_bytes():
            problem = f"not readable by another user ({seen.stderr.decode().strip()[:80]})"
    accuracy = 0.0 if problem else score(pred, LABELS).accuracy
    return Outcome(name, problem, accuracy, note)


def open_dir(parent: Path | None = None) -> Path:
    """A fresh folder that other users may enter (mkdtemp makes it 0700)."""
    path = Path(tempfile.mkdtemp(prefix="faults-", dir=parent))
    path.chmod(0o755)
    return path


def export_in_progress(out: Path) -> bool:
    """True while OUT holds a file or folder whose name marks a write in progress."""
    for base in (out, out / "model"):
        try:
            if any(sign in entry.name for entry in os.scandir(base) for sign in EXPORT_SIGNS):
                return True
        except OSError:
            pass
    return False


def kill_at(proc: subprocess.Popen, out: Path, mode: str, rng: random.Random, budget_s: float) -> str:
    """Waits for the kill instant of this mode, SIGKILLs the group; says when it struck."""
    start = time.time()
    deadline = start + {"early": rng.uniform(0.5, 6.0), "random": rng.uniform(0.0, budget_s)}.get(mode, budget_s)
    while proc.poll() is None and time.time() < deadline:
        if mode == "export" and export_in_progress(out):
            break
        time.sleep(0.005)
    if proc.poll() is not None:
        return f"{mode}: it had exited (rc {proc.returncode}) at {time.time() - start:.1f}s"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    return f"{mode}: killed at {time.time() - start:.1f}s"


def kills(n: int, budget_s: float, seed: int, cache: Path, work: Path) -> list[Outcome]:
    """n runs, each killed by SIGKILL at an instant of its mode: early, during an export, or at random."""
    rng = random.Random(seed)
    modes = ["early", "export", "random", "random", "random"]
    results = []
    for i in range(n):
        out = work / f"kill{i}"
        proc = subprocess.Popen(command(out, budget_s, i, cache), env=clean_env(), start_new_session=True,
                                stdout=subprocess.DEVNULL, stderr=open(work / f"kill{i}.log", "w"))
        when = kill_at(proc, out, modes[i % len(modes)], rng, budget_s)
        results.append(outcome(f"kill {i + 1}", out, when))
    return results


def shared_cache(runs: int, budget_s: float, cache: Path, work: Path) -> list[Outcome]:
    """runs online runs started at once on one fresh cache folder."""
    outs = [work / f"shared{i}" for i in range(runs)]
    procs = [subprocess.Popen(command(out, budget_s, i, cache), env=clean_env(), start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=open(work / f"shared{i}.log", "w"))
             for i, out in enumerate(outs)]
    return [outcome(f"shared {i + 1}", out, f"rc {proc.wait()}") for i, (proc, out) in enumerate(zip(procs, outs))]


def sigterm_decoding(budget_s: float, work: Path) -> Outcome:
    """SIGTERM to the run's process group while it decodes into a fresh cache."""
    cache, out = open_dir(work), work / "sigterm"
    proc = subprocess.Popen(command(out, budget_s, 0, cache), env=clean_env(), start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=open(work / "sigterm.log", "w"))
    while proc.poll() is None and not any(cache.rglob("*.partial*")):
        time.sleep(0.01)
    sent = time.time()
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        rc = proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        rc = proc.wait()
    return outcome("sigterm while decoding", out, f"rc {rc}, exited {time.time() - sent:.1f}s after the signal")


def readonly_home(budget_s: float, work: Path) -> Outcome:
    """A run whose HOME is a read-only mount (a user and mount namespace binds it read-only: even root gets
    EROFS there), with no cache folder given."""
    home, out = open_dir(work), open_dir(work) / "OUT"
    env = clean_env(HOME=str(home))
    env.pop("TIMEBOX_CACHE_DIR", None)
    readonly = f"mount --bind {home} {home} && mount -o remount,bind,ro {home} && exec \"$@\""
    proc = subprocess.run(["unshare", "-rm", "sh", "-c", readonly, "sh", *command(out, budget_s, 0, None)], env=env,
                          stdout=subprocess.DEVNULL, stderr=open(work / "home.log", "w"))
    return outcome("read-only HOME", out, f"rc {proc.returncode}, files in HOME after: {len(list(home.iterdir()))}")


def cache_entries_match(cache: Path) -> tuple[int, int]:
    """(entries equal to a fresh decode, entries checked) over the complete entries in cache."""
    lists = [read_dataset(TRAIN).files, list_images(TEST)]
    checked = equal = 0
    for entry in sorted(p for p in cache.iterdir() if (p / "complete").exists()):
        marker = json.loads((entry / "complete").read_text())
        files = next((f for f in lists if cache_key(f, marker["size"]) == entry.name), None)
        checked += 1
        if files is None:
            print(f"  cache entry {entry.name[:12]}: no file list of this bench matches it")
            continue
        images = np.memmap(entry / "images.u8", dtype=np.uint8, mode="r",
                           shape=(len(files), marker["size"], marker["size"], 3))
        same = all(np.array_equal(images[i], d.image) if (d := decode_image(f, marker["size"])).image is not None
                   else True for i, f in enumerate(files))
        equal += same
        print(f"  cache entry {entry.name[:12]} ({len(files)} images at {marker['size']} px): "
              f"{'equal to' if same else 'DIFFERENT from'} a fresh decode")
    return equal, checked


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--kills", type=int, default=20)
    p.add_argument("--budget", default="2m")
    p.add_argument("--shared", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--only", default="kills,shared,sigterm,home")
    args = p.parse_args()
    budget_s, only = parse_duration(args.budget), set(args.only.split(","))
    work = open_dir()
    print(f"faults on trashnet, budget {budget_s:.0f}s, {os.cpu_count()} CPUs, "
          f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}, work in {work}", flush=True)
    results, cache_counts = [], (0, 0)
    if "kills" in only:
        results += kills(args.kills, budget_s, args.seed, open_dir(work), work)
    if "shared" in only:
        shared = open_dir(work)
        results += shared_cache(args.shared, budget_s, shared, work)
        cache_counts = cache_entries_match(shared)
    if "sigterm" in only:
        results.append(sigterm_decoding(budget_s, work))
    if "home" in only:
        results.append(readonly_home(budget_s, work))
    for r in results:
        print(f"{r.name:24s} {r.note:40s} {r.problem or 'complete, valid, readable by another user'}"
              f"{'' if r.problem else f', test accuracy {100 * r.accuracy:.2f}%'}")
    good = sum(not r.problem for r in results)
    print(f"runs leaving a complete predictions.csv readable by another user: {good}/{len(results)}; "
          f"shared cache entries equal to a fresh decode: {cache_counts[0]}/{cache_counts[1]}")


if __name__ == "__main__":
    main()
