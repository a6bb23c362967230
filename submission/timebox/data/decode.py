"""Decode one image file into a size x size RGB array, reporting (never raising) bad files.

The whole image is squashed to size x size (no crop, aspect ratio not kept) with Pillow's BILINEAR
filter, which is antialiased when shrinking, and reducing_gap=3.0, which first shrinks large images by
an integer factor with a box filter (fast, visually identical). JPEGs are additionally decoded at a
reduced DCT scale via draft(), never below the target size.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

MAX_PIXELS = 89_478_485  # Pillow's own warning threshold (~ 9459 x 9459); larger images are rejected
REDUCING_GAP = 3.0
_HIGH_DEPTH_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I", "F"})
_PIXELS_IN_MESSAGE = re.compile(r"\((\d+) pixels\)")


@dataclass(frozen=True, eq=False)
class Decoded:
    """image: uint8 (size, size, 3) RGB, or None with error giving a short reason."""

    image: np.ndarray | None
    error: str | None


def decode_image(path: Path, size: int) -> Decoded:
    """Decode path to a uint8 (size, size, 3) RGB array; unreadable files give Decoded(None, reason)."""
    try:
        if Path(path).stat().st_size == 0:
            return Decoded(None, "zero-byte file")
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                pixels = img.width * img.height
                if pixels > MAX_PIXELS:
                    return Decoded(None, f"decompression bomb ({pixels} pixels)")
                img.draft("RGB", (size, size))
                img.load()
                rgb = _to_rgb(_upright(img))
        resized = rgb.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=REDUCING_GAP)
        return Decoded(np.asarray(resized, dtype=np.uint8), None)
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
            return Decoded(None, "truncated")
        return Decoded(None, f"corrupt image ({type(exc).__name__}: {str(exc)[:100]})")


def _upright(img: Image.Image) -> Image.Image:
    """Apply the EXIF orientation; an unreadable EXIF block leaves the image as stored."""
    try:
        return ImageOps.exif_transpose(img)
    except Exception:  # noqa: BLE001 - broken EXIF must not lose an otherwise good image
        return img


def _to_rgb(img: Image.Image) -> Image.Image:
    """Any Pillow mode -> RGB; transparency is composited over white, high bit depths are rescaled."""
    if img.mode in _HIGH_DEPTH_MODES:
        return Image.fromarray(_to_uint8(np.asarray(img))).convert("RGB")
    if img.has_transparency_data:
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return img.convert("RGB")


def _to_uint8(values: np.ndarray) -> np.ndarray:
    """Integers in 0..65535 scale by 255/65535, floats in 0..1 by 255, anything else is min-max stretched."""
    data = np.nan_to_num(values.astype(np.float32))
    low, high = float(data.min()), float(data.max())
    if np.issubdtype(values.dtype, np.integer) and low >= 0 and high <= 65535:
        data *= 255 / 65535
    elif np.issubdtype(values.dtype, np.floating) and low >= 0 and high <= 1:
        data *= 255
    elif high > low:
        data = (data - low) * (255 / (high - low))
    else:
        data[:] = 0
    return np.clip(np.rint(data), 0, 255).astype(np.uint8)
