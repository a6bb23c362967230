"""Plain progress lines with elapsed and remaining time, on stderr (stdout stays for results)."""

from __future__ import annotations

import sys

from .budget import Budget


class Progress:
    """``Progress(budget)("extracting features")`` prints ``[  12.3s | 287.7s left] extracting features``."""

    def __init__(self, budget: Budget, stream=None):
        self.budget, self.stream = budget, stream or sys.stderr
        self.events: list[dict] = []

    def __call__(self, message: str) -> None:
        elapsed, left = self.budget.elapsed(), self.budget.remaining()
        self.events.append({"elapsed_s": round(elapsed, 2), "message": message})
        print(f"[{elapsed:7.1f}s | {left:7.1f}s left] {message}", file=self.stream, flush=True)
