"""Does glibc's malloc trimming slow CPU training here? Side by side, in fresh processes.

Runs bench/_train_steps.py (EfficientNet-Lite0 train and inference steps) under each allocator
setting, interleaved, REPS times, and prints medians and ratios to the glibc default.

    .venv/bin/python bench/allocator.py [--reps 3] [--size 224] [--batch 16] [--steps 12]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
_NO_TRIM = {"MALLOC_TRIM_THRESHOLD_": "268435456", "MALLOC_MMAP_THRESHOLD_": "268435456"}
KEYS = ("train_img_s", "infer_img_s", "finetune_top_img_s")
_TCMALLOC = [Path("/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4"), Path("/usr/lib/x86_64-linux-gnu/libtcmalloc.so.4")]


def variants() -> dict[str, dict[str, str]]:
    out = {"glibc default": {}, "glibc no trim (run.sh)": dict(_NO_TRIM)}
    for lib in _TCMALLOC:
        if lib.exists():
            out[f"tcmalloc ({lib.name})"] = {"LD_PRELOAD": str(lib)}
            break
    return out


def run_once(env_extra: dict[str, str], args) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "LD_PRELOAD"}
    env.update(env_extra, TF_CPP_MIN_LOG_LEVEL="2")
    cmd = [sys.executable, str(HERE / "_train_steps.py"), str(args.size), str(args.batch), str(args.steps)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--steps", type=int, default=12)
    args = p.parse_args()
    results: dict[str, list[dict]] = {name: [] for name in variants()}
    for rep in range(args.reps):
        for name, env in variants().items():
            r = run_once(env, args)
            results[name].append(r)
            print(f"rep {rep + 1} {name:24s} " + "  ".join(f"{k[:-6]} {r[k]:7.2f} img/s" for k in KEYS), flush=True)
    base = {k: statistics.median(r[k] for r in results["glibc default"]) for k in KEYS}
    print(f"\nEfficientNet-Lite0 @ {args.size}px, batch {args.batch}, median of {args.reps} fresh processes, "
          f"{os.cpu_count()} CPUs (ratio to the glibc default)")
    for name, rs in results.items():
        med = {k: statistics.median(r[k] for r in rs) for k in KEYS}
        print(f"{name:24s} " + "  ".join(f"{k[:-6]} {med[k]:7.2f} img/s (x{med[k] / base[k]:.2f})" for k in KEYS))


if __name__ == "__main__":
    main()
