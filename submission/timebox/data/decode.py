"""Decode one image file into a size x size RGB array, reporting (never raising) bad files.

The whole image is squashed to size x size (no crop, aspect ratio not kept) with Pillow's BILINEAR
filter, which is antialiased when shrinking, after an integer box reduction for large images (what
Pillow's reducing_gap=3.0 does: fast, visually identical). JPEGs are decoded at a reduced DCT scale via
draft(), never below the target size. The conversion to 8-bit RGB (premultiplied RGBa where there is
transparency, composited over white at the end) runs strip by strip during the reduction, so a large
image costs its decoded pixels plus a strip, never a converted full-resolution copy. EXIF orientation is
applied to the result. This file is self-contained: exported models copy it to decode as training did.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

MAX_PIXELS = 89_478_485  # Pillow's own warning threshold (~ 9459 x 9459); larger images are rejected
REDUCING_GAP = 3.0
STRIP_PIXELS = 1 << 20  # pixels converted at a time while reducing: bounds the working copy (4 MB as RGBa)
TRUNCATED = "truncated"
PARTIAL = "truncated (partly decoded)"  # decode_truncated's error: the image holds the part that decodes
_HIGH_DEPTH_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I", "F"})
_PIXELS_IN_MESSAGE = re.compile(r"\((\d+) pixels\)")
_ORIENTATION_TAG = 0x0112
_UPRIGHT = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
            5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
            8: Image.Transpose.ROTATE_90}  # EXIF orientation -> the transpose that makes the image upright


@dataclass(frozen=True, eq=False)
class Decoded:
    """image: uint8 (size, size, 3) RGB, or None with error giving a short reason (see decode_truncated)."""

    image: np.ndarray | None
    error: str | None


def decode_image(path: Path, size: int) -> Decoded:
    """Decode path to a uint8 (size, size, 3) RGB array; unreadable files give Decoded(None, reason)."""
    return _decode(path, size, truncated_ok=False)


def decode_truncated(path: Path, size: int) -> Decoded:
    """A truncated file's decodable part (Pillow fills the rest) as Decoded(image, PARTIAL); Pillow's
    LOAD_TRUNCATED_IMAGES is set for this call only (not thread-safe: decode in one thread per process)."""
    decoded = _decode(path, size, truncated_ok=True)
    return Decoded(decoded.image, PARTIAL) if decoded.image is not None else decoded


def _decode(path: Path, size: int, truncated_ok: bool) -> Decoded:
    try:
        if Path(path).stat().st_size == 0:
            return Decoded(None, "zero-byte file")
        with warnings.catch_warnings(), _truncated_loading(truncated_ok):
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                pixels = img.width * img.height
                if pixels > MAX_PIXELS:
                    return Decoded(None, f"decompression bomb ({pixels} pixels)")
                img.draft("RGB", (size, size))
                img.load()
                small = _squashed(img, size)
                upright = _UPRIGHT.get(_orientation(img))
        return Decoded(_to_array(small.transpose(upright) if upright is not None else small), None)
    except FileNotFoundError:
        return Decoded(None, "file not found")
    except PermissionError:
        return Decoded(None, "permission denied")
    except UnidentifiedImageError:
        return Decoded(None, "not an image")
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        found = _PIXELS_IN_MESSAGE.search(str(exc))
        return Decoded(None, f"decompression bomb ({found.group(1)} pixels)" if found else "decompression bomb")
    except Exception as exc:  # noqa: BLE001 - any decoder failure is a per-file error, never a crash
        if "truncated" in str(exc):
            return Decoded(None, TRUNCATED)
        return Decoded(None, f"corrupt image ({type(exc).__name__}: {str(exc)[:100]})")


@contextmanager
def _truncated_loading(allowed: bool) -> Iterator[None]:
    """Pillow's module-wide LOAD_TRUNCATED_IMAGES set to allowed inside, restored after."""
    before = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = allowed
    try:
        yield
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = before


def _orientation(img: Image.Image) -> int | None:
    """The EXIF orientation; an unreadable EXIF block counts as none (the image as stored)."""
    try:
        orientation = img.getexif().get(_ORIENTATION_TAG)
        return orientation if isinstance(orientation, int) else None
    except Exception:  # noqa: BLE001 - broken EXIF must not lose an otherwise good image
        return None


def _squashed(img: Image.Image, size: int) -> Image.Image:
    """The loaded img at size x size, RGB or premultiplied RGBa: an integer box reduction by the factors
    Pillow's resize would use for REDUCING_GAP, converting strip by strip, then BILINEAR over the same box."""
    fx, fy = (max(1, int(n / size / REDUCING_GAP)) for n in img.size)
    box = (0, 0, img.width / fx, img.height / fy)
    return _reduced(img, fx, fy).resize((size, size), Image.Resampling.BILINEAR, box=box)


def _reduced(img: Image.Image, fx: int, fy: int) -> Image.Image:
    """img converted (see _converter) and box-reduced by (fx, fy), strip by strip: strips of whole blocks give
    the same pixels as reducing img at once."""
    convert = _converter(img)
    reduced: Image.Image | None = None
    for top, strip in _strips(img, fy):
        part = convert(strip)
        part = part if (fx, fy) == (1, 1) else part.reduce((fx, fy))
        if strip is img:
            return part
        if reduced is None:
            reduced = Image.new(part.mode, (part.width, -(-img.height // fy)))
        reduced.paste(part, (0, top // fy))
    return reduced


def _strips(img: Image.Image, multiple: int) -> Iterator[tuple[int, Image.Image]]:
    """(top row, strip) down img: strips of about STRIP_PIXELS, their heights a multiple of multiple (img
    itself when it is one strip)."""
    rows = max(multiple, STRIP_PIXELS // max(img.width, 1) // multiple * multiple)
    if rows >= img.height:
        yield 0, img
        return
    for top in range(0, img.height, rows):
        yield top, img.crop((0, top, img.width, min(top + rows, img.height)))


def _converter(img: Image.Image) -> Callable[[Image.Image], Image.Image]:
    """Converts a strip of img: RGB, premultiplied RGBa if img has transparency, high depths rescaled to 8 bits
    by one mapping for the whole image."""
    if img.mode in _HIGH_DEPTH_MODES:
        to_uint8 = _depth_mapping(img)
        return lambda strip: Image.fromarray(to_uint8(np.asarray(strip))).convert("RGB")
    if img.has_transparency_data:
        return lambda strip: strip.convert("RGBA").convert("RGBa")
    return lambda strip: strip.convert("RGB")


def _to_array(img: Image.Image) -> np.ndarray:
    """RGB, or premultiplied RGBa composited over white, as a uint8 (h, w, 3) array."""
    if img.mode != "RGBa":
        return np.asarray(img, dtype=np.uint8)
    values = np.asarray(img, dtype=np.int16)
    return np.clip(values[..., :3] + (255 - values[..., 3:]), 0, 255).astype(np.uint8)


@dataclass(frozen=True)
class _Linear:
    """values -> round((values - offset) * gain) clipped to 0..255, NaN as 0."""

    offset: float
    gain: float

    def __call__(self, values: np.ndarray) -> np.ndarray:
        data = np.nan_to_num(values.astype(np.float32))
        return np.clip(np.rint((data - self.offset) * self.gain), 0, 255).astype(np.uint8)


def _depth_mapping(img: Image.Image) -> _Linear:
    """Integers in 0..65535 scale by 255/65535, floats in 0..1 by 255, anything else is min-max stretched."""
    low, high, dtype = np.inf, -np.inf, None
    for _, strip in _strips(img, 1):
        values = np.asarray(strip)
        data = np.nan_to_num(values.astype(np.float32))
        low, high, dtype = min(low, float(data.min())), max(high, float(data.max())), values.dtype
    if np.issubdtype(dtype, np.integer) and low >= 0 and high <= 65535:
        return _Linear(0.0, 255 / 65535)
    if np.issubdtype(dtype, np.floating) and low >= 0 and high <= 1:
        return _Linear(0.0, 255.0)
    return _Linear(low, 255 / (high - low)) if high > low else _Linear(0.0, 0.0)
