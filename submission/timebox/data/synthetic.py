"""Procedural image-classification dataset in the flowers5 layout, for self-tests without real data.

Each class is a visually distinct shape or pattern with random colours, position, scale and rotation on
a noisy gradient background; written as JPEG.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from timebox.errors import UsageError

Colour = tuple[int, int, int]


def make_synthetic(
    root: Path,
    n_per_class: int = 40,
    n_test_per_class: int = 10,
    size: int = 96,
    seed: int = 0,
    classes: tuple[str, ...] = ("circle", "square", "stripes", "triangle"),
) -> Path:
    """Write root/train/<class>/*.jpg, class_index.txt (in root/train and root), root/test/NNNNN.jpg and
    root/test_labels.csv (`filename,label`, label = class id = position in classes); return root."""
    unknown = [name for name in classes if name not in _DRAWERS]
    if unknown or len(set(classes)) != len(classes) or not classes:
        raise UsageError(f"synthetic classes must be distinct names from {sorted(_DRAWERS)}, got {list(classes)}")
    if n_per_class < 1 or n_test_per_class < 0 or size < 16:
        raise UsageError("synthetic data needs n_per_class >= 1, n_test_per_class >= 0 and size >= 16")
    root = Path(root)
    rng = np.random.default_rng(seed)
    train = root / "train"
    for name in classes:
        (train / name).mkdir(parents=True, exist_ok=True)
        for i in range(n_per_class):
            _render(name, size, rng).save(train / name / f"{name}_{i:04d}.jpg", quality=90)
    class_index = "".join(f"{name} {i}\n" for i, name in enumerate(classes))
    for folder in (train, root):  # flowers5 keeps it in root; train/ makes the train folder self-contained
        (folder / "class_index.txt").write_text(class_index, encoding="utf-8")
    test_ids = rng.permutation(np.repeat(np.arange(len(classes)), n_test_per_class))
    (root / "test").mkdir(parents=True, exist_ok=True)
    rows = ["filename,label"]
    for i, class_id in enumerate(test_ids):
        filename = f"{i:05d}.jpg"
        _render(classes[class_id], size, rng).save(root / "test" / filename, quality=90)
        rows.append(f"{filename},{class_id}")
    (root / "test_labels.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return root


def _render(name: str, size: int, rng: np.random.Generator) -> Image.Image:
    """One image of class name: noisy gradient background, the class's shape, sensor-like noise."""
    background = _colour(rng)
    foreground = _colour(rng)
    while sum(abs(a - b) for a, b in zip(background, foreground)) < 200:
        foreground = _colour(rng)
    ramp = np.linspace(-1, 1, size)[:, None, None] * rng.uniform(-40, 40, size=3)
    canvas = np.clip(np.array(background, dtype=np.float64) + ramp + np.zeros((size, size, 3)), 0, 255)
    img = Image.fromarray(canvas.astype(np.uint8))
    _DRAWERS[name](ImageDraw.Draw(img), size, foreground, rng)
    noisy = np.asarray(img, dtype=np.float64) + rng.normal(0, 10, size=(size, size, 3))
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))


def _colour(rng: np.random.Generator) -> Colour:
    red, green, blue = (int(v) for v in rng.integers(0, 256, size=3))
    return red, green, blue


def _polygon(rng: np.random.Generator, size: int, corners: int, radius: float) -> list[tuple[float, float]]:
    """A regular polygon with random rotation, centred where it fits inside the image."""
    cx, cy = rng.uniform(radius, size - radius, size=2)
    turn = rng.uniform(0, 2 * math.pi)
    angles = [turn + 2 * math.pi * k / corners for k in range(corners)]
    return [(cx + radius * math.cos(a), cy + radius * math.sin(a)) for a in angles]


def _circle(draw: ImageDraw.ImageDraw, size: int, colour: Colour, rng: np.random.Generator) -> None:
    radius = rng.uniform(0.15, 0.35) * size
    cx, cy = rng.uniform(radius, size - radius, size=2)
    draw.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), fill=colour)


def _square(draw: ImageDraw.ImageDraw, size: int, colour: Colour, rng: np.random.Generator) -> None:
    draw.polygon(_polygon(rng, size, 4, rng.uniform(0.2, 0.45) * size), fill=colour)


def _triangle(draw: ImageDraw.ImageDraw, size: int, colour: Colour, rng: np.random.Generator) -> None:
    draw.polygon(_polygon(rng, size, 3, rng.uniform(0.25, 0.48) * size), fill=colour)


def _stripes(draw: ImageDraw.ImageDraw, size: int, colour: Colour, rng: np.random.Generator) -> None:
    """Parallel bands across the whole image at a random angle and period."""
    period = rng.uniform(0.08, 0.2) * size
    angle = rng.uniform(0, math.pi)
    along = (math.cos(angle), math.sin(angle))
    across = (-along[1], along[0])
    centre = size / 2
    reach = size
    offset = -reach + rng.uniform(0, period)
    while offset < reach:
        corners = [(offset, -reach), (offset + period / 2, -reach), (offset + period / 2, reach), (offset, reach)]
        draw.polygon(
            [(centre + u * across[0] + v * along[0], centre + u * across[1] + v * along[1]) for u, v in corners],
            fill=colour,
        )
        offset += period


_DRAWERS: dict[str, Callable[[ImageDraw.ImageDraw, int, Colour, np.random.Generator], None]] = {
    "circle": _circle,
    "square": _square,
    "stripes": _stripes,
    "triangle": _triangle,
}
