"""The input size a run can afford: smaller images when every image's features at the chosen size
would not fit the budget.

A backbone's cost per image grows with the square of the input size, so when extracting every
image at ``size`` would take ``need_s`` and only ``time_s`` is left, the size is scaled by
``sqrt(FIT * time_s / need_s)`` and rounded down to a multiple of ``STEP``, never below
``min_size``. Without it the run would extract only part of the training images (or none of the
val images, and stop with an error); at a smaller size it keeps all of them.

Example::

    affordable_size(224, need_s=30.0, time_s=20.0, min_size=128)  # 160
"""

from __future__ import annotations

import math

STEP = 16  # sizes are multiples of this (EfficientNet's stride is 32; 16 keeps more choices)
FIT = 0.8  # the smaller size is planned to take at most this share of the time left: the estimate's margin


def affordable_size(size: int, need_s: float, time_s: float, min_size: int) -> int:
    """``size`` if ``need_s`` fits in ``time_s``; else the largest multiple of ``STEP`` whose estimated need
    (quadratic in the size) is at most ``FIT * time_s``, but at least ``min(min_size, size)``."""
    floor = min(min_size, size)
    if need_s <= time_s:
        return size
    if time_s <= 0:
        return floor
    scaled = size * math.sqrt(FIT * time_s / need_s)
    return max(floor, min(size, int(scaled // STEP) * STEP))
