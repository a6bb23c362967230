"""Augmentation of training images, for fine-tuning the whole backbone on images (the image cut; setting
``augment``, a comma-separated list of ``crop``, ``flip``, ``rotate``, ``color``, ``randaugment``, ``erase``).

Activations cached after a cut in the backbone can only be mirrored (their views are extracted once); when the
cut is the image itself, every batch gets fresh transforms:

- ``crop``: a random share of each image's area, at a random aspect ratio and place, resized back to the full size
  (numpy, nearest neighbour: cheap next to a training step of the whole backbone; Keras 3 has no random-resized
  crop layer);
- the others are Keras preprocessing layers (``RandomFlip``, ``RandomRotation``, ``RandomColorJitter``,
  ``RandAugment``, ``RandomErasing``), run on the accelerator when there is one. Mixing of images (settings
  ``mixup``, ``cutmix``) uses Keras' ``MixUp`` and ``CutMix`` layers (:class:`ImageMixer`).

At the image cut the batches are images already scaled by the backbone's preprocessing (``preprocess``, a mode of
:data:`timebox.models.preprocessing.MODES`: Lite's are (x - 127) / 128); the layers see them as 0-255 pixels again,
and the result is clipped to valid pixels and scaled back. Off at prediction time. Example::

    augment = ImageAugment("crop,flip,randaugment", seed=0, preprocess="lite")
    batch = augment(batch, np.random.default_rng(0))   # (n, h, w, c) -> (n, h, w, c)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import keras
import numpy as np

from ..models.preprocessing import MODES
from ..settings import augment_names
from .sampling import Mixer

def _layer(name: str, seed: int) -> keras.layers.Layer:
    value_range = (0, 255)
    return {
        "flip": lambda: keras.layers.RandomFlip("horizontal", seed=seed),
        "rotate": lambda: keras.layers.RandomRotation(0.05, fill_mode="reflect", seed=seed),
        # saturation: Keras' factor 0.5 is no change, a scalar f draws from (0, f): 0.2 shifted a batch's mean
        # from 127 to 188 (bench/RESULTS.md, 2026-12-07 (15:01Z-), augment)
        "color": lambda: keras.layers.RandomColorJitter(value_range, brightness_factor=0.2, contrast_factor=0.2,
                                                        saturation_factor=(0.4, 0.6), seed=seed),
        "randaugment": lambda: keras.layers.RandAugment(value_range, num_ops=2, factor=0.5, seed=seed),
        "erase": lambda: keras.layers.RandomErasing(factor=0.5, value_range=value_range, seed=seed),
    }[name]()


@dataclass
class ImageAugment:
    """``augment``'s transforms of a batch of images (n, h, w, c), scaled as ``preprocess`` says."""

    names: str = "crop"
    seed: int = 0
    preprocess: str = "raw"
    layers: list = field(init=False)

    crop: bool = field(init=False)

    def __post_init__(self):
        names = augment_names(self.names)
        self.crop = "crop" in names
        self.layers = [_layer(n, self.seed + i) for i, n in enumerate(names) if n != "crop"]

    def __call__(self, batch: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if self.crop:
            batch = random_resized_crop(batch, rng)
        if self.layers:
            scale, offset, bgr = (np.asarray(v, np.float32) for v in MODES[self.preprocess])
            pixels = (np.asarray(batch, np.float32) - offset) / scale
            pixels = pixels[..., ::-1] if bgr else pixels  # the layers' colour operations read RGB
            for layer in self.layers:
                pixels = keras.ops.convert_to_numpy(layer(pixels, training=True))
            pixels = np.clip(pixels, 0, 255)
            batch = (pixels[..., ::-1] if bgr else pixels) * scale + offset
        return np.asarray(batch, np.float32)


@dataclass(frozen=True)
class ImageMixer(Mixer):
    """Keras' ``MixUp`` / ``CutMix`` on a batch of images: ``(x, ids, weights) -> (x, soft labels, weights)``;
    with both on, each batch gets one of the two. Weights stay each image's own (Keras mixes images and labels)."""

    def __call__(self, x: np.ndarray, y: np.ndarray, w: np.ndarray | None,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        soft = np.eye(self.num_classes, dtype=np.float32)[y]
        kind = self.kind(True, rng)
        if kind is None:
            return x, soft, w
        seed = int(rng.integers(2**31))
        layer = keras.layers.CutMix(factor=(self.cutmix, self.cutmix), seed=seed) if kind == "cutmix" else \
            keras.layers.MixUp(alpha=self.mixup, seed=seed)
        out = layer({"images": x, "labels": soft}, training=True)
        return (np.asarray(keras.ops.convert_to_numpy(out["images"]), np.float32),
                np.asarray(keras.ops.convert_to_numpy(out["labels"]), np.float32), w)


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
