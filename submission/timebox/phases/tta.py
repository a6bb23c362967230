"""Flip test-time augmentation: whether predictions average the original and the mirrored view."""

from __future__ import annotations

import numpy as np

from ..metrics import accuracy, noise_margin


def use_flip_tta(single_accuracy: float, tta_accuracy: float, n_val: int) -> bool:
    """Unless averaging is clearly worse on val: more than 2 standard errors below the original view alone. A few
    hundred val images cannot tell a point apart, and in twelve trashnet cases flip TTA gained a median of 0.4
    test points (bench/RESULTS.md, 2026-11-25 early morning).

    >>> use_flip_tta(0.9010, 0.8977, 303), use_flip_tta(0.90, 0.80, 303)
    (True, False)
    """
    return tta_accuracy >= single_accuracy - noise_margin(single_accuracy, n_val)


def flip_tta_on_val(per_view: list[np.ndarray], y_val: np.ndarray) -> tuple[bool, float]:
    """Whether a model's predictions average its val views' probabilities ``per_view`` (original first), and its
    val accuracy on the views it will use."""
    single = accuracy(per_view[0], y_val)
    if len(per_view) < 2:
        return False, single
    both = accuracy(sum(per_view) / len(per_view), y_val)
    tta = use_flip_tta(single, both, len(y_val))
    return tta, both if tta else single
