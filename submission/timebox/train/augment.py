"""Random-resized crops of a batch of images, for fine-tuning the whole backbone on images.

Activations cached after a cut in the backbone can only be mirrored (their views are
extracted once); when the cut is the image itself, every batch gets fresh crops: a random
share of each image's area, at a random aspect ratio and place, resized back to the full
size (nearest neighbour: cheap next to a training step of the whole backbone).

Example::

    rng = np.random.default_rng(0)
    batch = random_resized_crop(batch, rng)   # (n, h, w, c) -> (n, h, w, c)
"""

from __future__ import annotations

import numpy as np

CROP_AREA = (0.35, 1.0)  # share of the image's area a crop covers
CROP_RATIO = (3 / 4, 4 / 3)  # a crop's width over its height


def random_resized_crop(batch: np.ndarray, rng: np.random.Generator, area: tuple[float, float] = CROP_AREA,
                        ratio: tuple[float, float] = CROP_RATIO) -> np.ndarray:
    """One random crop of each image of ``batch`` (n, h, w, c), resized back to (h, w)."""
    n, h, w = batch.shape[:3]
    share = rng.uniform(*area, n)
    aspect = np.exp(rng.uniform(np.log(ratio[0]), np.log(ratio[1]), n))
    crop_w = np.clip(np.sqrt(share * aspect) * w, 1, w)
    crop_h = np.clip(np.sqrt(share / aspect) * h, 1, h)
    left, top = rng.uniform(0, 1, n) * (w - crop_w), rng.uniform(0, 1, n) * (h - crop_h)
    out = np.empty_like(batch)
    for i in range(n):
        rows = np.minimum((top[i] + (np.arange(h) + 0.5) * crop_h[i] / h).astype(np.int64), h - 1)
        cols = np.minimum((left[i] + (np.arange(w) + 0.5) * crop_w[i] / w).astype(np.int64), w - 1)
        out[i] = batch[i][rows[:, None], cols[None, :]]
    return out
