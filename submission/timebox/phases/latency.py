"""p95 latency of a model on one image at a time, on this machine."""

from __future__ import annotations

import time

import keras
import numpy as np

from ..plan import Measured


def measure_latency(model: keras.Model, size: int, views: int, images: int, measured: Measured) -> float:
    """p95 milliseconds of ``model`` on one image at a time (after 3 warm-up calls). Its first call traces it:
    that time per view the model runs its bottom on (``views``) raises ``measured.trace_s`` when longer."""
    batch = np.zeros((1, size, size, 3), np.uint8)
    times = []
    for _ in range(images + 3):
        t = time.perf_counter()
        model.predict_on_batch(batch)
        times.append(time.perf_counter() - t)
    measured.trace_s = max(measured.trace_s, (times[0] - float(np.median(times[3:]))) / views)
    return float(np.percentile(times[3:], 95) * 1000)
