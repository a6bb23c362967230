"""Run a frozen feature extractor over cached uint8 images, batch by batch, stoppable.

Example::

    feats = extract_features(extractor, cache.images, order, should_stop=budget.expired)
    feats.done            # how many of ``order`` were extracted before a stop
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import keras
import numpy as np

from ..accelerators import accelerators

# Images per batch through a backbone's early layers. On a CPU small batches keep those layers'
# large activations in cache: bench/infer_batch.py (2-core EPYC, Lite0 at 224 px) ran 1.4-1.9x
# more images per second in batches of 4-8 than of 32 (see bench/RESULTS.md).
CPU_IMAGE_BATCH = 8
ACCELERATOR_IMAGE_BATCH = 64  # not measured: no accelerator here runs TensorFlow


def image_batch_size() -> int:
    """The inference batch for raw images on this machine: small on a CPU, large on an accelerator."""
    return ACCELERATOR_IMAGE_BATCH if accelerators() else CPU_IMAGE_BATCH


@dataclass
class Features:
    values: np.ndarray  # (done, *output shape): outputs for indices[:done]
    done: int
    seconds: float = 0.0  # how long computing them took


def extract_features(
    extractor: keras.Model,
    images: np.ndarray,
    indices: np.ndarray,
    batch_size: int | None = None,
    should_stop: Callable[[], bool] | None = None,
    on_batch: Callable[[int], None] | None = None,
    flip: bool = False,
    dtype: np.dtype = np.float32,
) -> Features:
    """Features of ``images[indices]`` in order; stops early (between batches) when ``should_stop()``.

    Batches are padded to ``batch_size`` (default: :func:`image_batch_size`) so the compiled graph
    is traced once. ``flip`` mirrors the images left-right first (a test-time or feature-augmentation
    view). ``dtype`` is the storage type of the result (float16 halves the memory of cached activations).
    """
    batch_size = batch_size or image_batch_size()
    t0 = time.perf_counter()
    out = np.empty((len(indices), *extractor.output_shape[1:]), dtype=dtype)
    done = 0
    while done < len(indices):
        if should_stop is not None and should_stop():
            break
        idx = np.sort(indices[done : done + batch_size])
        order = np.argsort(np.argsort(indices[done : done + batch_size]))
        batch = np.asarray(images[idx])[order]
        if flip:
            batch = batch[:, :, ::-1]
        n = len(batch)
        if n < batch_size:
            batch = np.concatenate([batch, np.zeros((batch_size - n, *batch.shape[1:]), batch.dtype)])
        out[done : done + n] = keras.ops.convert_to_numpy(extractor.predict_on_batch(batch))[:n]
        done += n
        if on_batch is not None:
            on_batch(done)
    return Features(out[:done], done, time.perf_counter() - t0)
