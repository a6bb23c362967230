"""The input size a run can afford: smaller images when every image's features at the chosen size
would not fit the budget.

A backbone's multiply-adds per image grow with the square of the input size, its time on this CPU
less fast: EfficientNet-Lite0's bottom ran 83, 120 and about 200 images a second at 384, 288 and
224 px (bench/RESULTS.md), an exponent of 1.3-1.6. So when extracting every image at ``size``
would take ``need_s`` and only ``time_s`` is left (``setup_s`` of it first goes to decoding again
and rebuilding the backbone), the size is scaled by ``(FIT * (time_s - setup_s) / need_s) **
(1 / COST_EXPONENT)`` and rounded down to a multiple of ``STEP``, never below ``min_size``.
Without it the run would extract only part of the training images (or none of the val images, and
stop with an error); at a smaller size it keeps all of them.

Example::

    affordable_size(224, need_s=30.0, time_s=20.0, min_size=128)  # 144
"""

from __future__ import annotations

import math

STEP = 16  # sizes are multiples of this (EfficientNet's stride is 32; 16 keeps more choices)
FIT = 0.8  # the smaller size is planned to take at most this share of the time left: the estimate's margin
COST_EXPONENT = 1.5  # time per image ~ size ** this (measured 1.3-1.6 on this CPU; 2 would shrink too little)


def affordable_size(size: int, need_s: float, time_s: float, min_size: int, setup_s: float = 0.0) -> int:
    """``size`` if ``need_s`` fits in ``time_s``; else the largest multiple of ``STEP`` whose estimated need
    (``need_s`` scaled by the size to the power ``COST_EXPONENT``) is at most ``FIT * (time_s - setup_s)``,
    but at least ``min(min_size, size)``."""
    floor = min(min_size, size)
    if need_s <= time_s:
        return size
    if time_s - setup_s <= 0:
        return floor
    scaled = size * (FIT * (time_s - setup_s) / need_s) ** (1 / COST_EXPONENT)
    return max(floor, min(size, int(scaled // STEP) * STEP))
