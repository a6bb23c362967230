"""Inference speed by batch size: images through a backbone's bottom, cached activations through its top.

    .venv/bin/python bench/infer_batch.py [--dataset trashnet] [--images 192] [--repeats 3]

EfficientNet-Lite0 at 224 px with its ImageNet weights, on decoded images of ``dataset``'s
training split. Every (model, batch size) is traced first, then timed ``--repeats`` times,
interleaved so the machine's drift hits every setting alike. Prints images per second (median
of the repeats) and the ratio to batches of 32, which is what timebox used for everything before.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "submission"))

import numpy as np  # noqa: E402
from deadline import DATA, SPLITS  # noqa: E402

from timebox.data.cache import build_cache  # noqa: E402
from timebox.data.layouts import read_dataset  # noqa: E402
from timebox.models.features import extract_features  # noqa: E402
from timebox.models.registry import build_extractor, get_backbone  # noqa: E402
from timebox.predict import predict_batches  # noqa: E402

IMAGE_BATCHES = (4, 6, 8, 16, 32)
TOP_BATCHES = (6, 16, 32, 64, 256)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="trashnet", choices=sorted(SPLITS))
    ap.add_argument("--images", type=int, default=192)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--cache-dir", type=Path, default=ROOT / ".cache" / "bench")
    args = ap.parse_args()

    ds = read_dataset(DATA / args.dataset / SPLITS[args.dataset][0])
    cache = build_cache(ds.files[: args.images], 224, args.cache_dir)
    spec = get_backbone("efficientnet-lite0")
    idx = np.arange(len(cache.images))
    full = build_extractor(spec, 224, "imagenet")
    runs = {("image", "full", b): lambda b=b: extract_features(full.full, cache.images, idx, b) for b in IMAGE_BATCHES}
    for cut in (12, 5):
        ex = build_extractor(spec, 224, "imagenet", cut=cut)
        runs.update({("image", f"bottom<{cut}", b): lambda b=b, m=ex.bottom: extract_features(m, cache.images, idx, b)
                     for b in IMAGE_BATCHES})
        acts = extract_features(ex.bottom, cache.images, idx, 6, dtype=np.float16).values
        runs.update({("activations", f"top>={cut}", b): lambda b=b, m=ex.top, a=acts: predict_batches(m, a, b)
                     for b in TOP_BATCHES})
    for key, fn in runs.items():  # trace every shape once, untimed
        fn()
    speed: dict[tuple, list[float]] = {}
    for _ in range(args.repeats):
        for key, fn in runs.items():
            t = time.perf_counter()
            fn()
            speed.setdefault(key, []).append(len(idx) / (time.perf_counter() - t))
    print(f"{len(idx)} images of {args.dataset}, EfficientNet-Lite0 224 px, median of {args.repeats} interleaved runs")
    print(f"{'input':>12} {'model':>10} {'batch':>5} {'img/s':>8} {'vs 32':>6}")
    for (kind, model, b), s in speed.items():
        med, ref = float(np.median(s)), float(np.median(speed[(kind, model, 32)]))
        print(f"{kind:>12} {model:>10} {b:>5} {med:>8.1f} {med / ref:>6.2f}")


if __name__ == "__main__":
    main()
