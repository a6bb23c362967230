"""Worker of bench/allocator.py: times EfficientNet-Lite0 steps in this process: training the
whole network, inference, and what `online` spends its time on: the bottom's inference and
fine-tuning the top on cached activations.

Prints one JSON line: {"train_img_s": ..., "infer_img_s": ..., "finetune_top_img_s": ...}
(medians over timed steps).
"""

import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "submission"))

import keras  # noqa: E402
import numpy as np  # noqa: E402

from timebox.models.heads import build_head, compose_classifier  # noqa: E402
from timebox.models.registry import build_extractor, get_backbone  # noqa: E402


def timed(step, n_warm: int, n: int, batch: int) -> float:
    for _ in range(n_warm):
        step()
    times = []
    for _ in range(n):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    return batch / statistics.median(times)


def main(size: int, batch: int, steps: int) -> None:
    keras.utils.set_random_seed(0)
    parts = build_extractor(get_backbone("efficientnet-lite0"), size, "imagenet")
    extractor = parts.full
    model = compose_classifier(extractor, build_head(1280, 6))
    model.compile(optimizer=keras.optimizers.AdamW(1e-4), loss="sparse_categorical_crossentropy")
    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, (batch, size, size, 3), dtype=np.uint8)
    y = rng.integers(0, 6, batch)
    train = timed(lambda: model.train_on_batch(x, y), 3, steps, batch)
    infer = timed(lambda: extractor.predict_on_batch(x), 3, steps, batch)
    acts = parts.bottom.predict_on_batch(x)
    top_model = keras.Sequential([parts.top, build_head(1280, 6)])
    top_model.compile(optimizer=keras.optimizers.AdamW(1e-4), loss="sparse_categorical_crossentropy")
    finetune = timed(lambda: top_model.train_on_batch(acts, y), 3, 4 * steps, batch)
    print(json.dumps({"train_img_s": round(train, 2), "infer_img_s": round(infer, 2),
                      "finetune_top_img_s": round(finetune, 2)}))


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:4]))
