"""Progress: event lines with elapsed and remaining time, and on a terminal one status line that
updates in place (phase, progress, best val accuracy, ETA of the phase).

Event lines go to stderr (stdout stays for results) and, as plain lines, to a log file; the
status line is drawn only when stderr is a terminal, so logs and judges see plain lines only.

Example::

    log = Progress(budget, log_file=out / "report" / "log.txt")
    log("extracting features")           # [  12.3s | 287.7s left] extracting features
    log.status("extract", 320, 2000)     # on a terminal: the line under it, redrawn in place
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from .budget import Budget


class Progress:
    """Event lines (``log(message)``) and a terminal status line (``log.status(...)``)."""

    def __init__(self, budget: Budget, stream=None, log_file: Path | None = None, resumed: bool = False):
        self.budget, self.stream = budget, stream or sys.stderr
        self.events: list[dict] = []
        self.log_file = Path(log_file) if log_file else None
        if self.log_file:
            self.log_file.parent.mkdir(parents=True, exist_ok=True)
            if not resumed:
                self.log_file.write_text("", encoding="utf-8")
        self.live = hasattr(self.stream, "isatty") and self.stream.isatty()
        self._status_shown = False
        self._phase: tuple[str, float, int] | None = None  # name, start time, done at start
        self.best: float | None = None

    def _prefix(self) -> str:
        return f"[{self.budget.elapsed():7.1f}s | {self.budget.remaining():7.1f}s left]"

    def __call__(self, message: str) -> None:
        self.events.append({"elapsed_s": round(self.budget.elapsed(), 2), "message": message})
        line = f"{self._prefix()} {message}"
        if self._status_shown:
            self.stream.write("\r\x1b[K")
            self._status_shown = False
        print(line, file=self.stream, flush=True)
        if self.log_file:
            with open(self.log_file, "a", encoding="utf-8") as f:
                f.write(line + "\n")

    def status(self, phase: str, done: int, total: int, best: float | None = None) -> None:
        """Redraw the status line: ``phase done/total``, best val accuracy, ETA of the phase."""
        now = time.time()
        if self._phase is None or self._phase[0] != phase or done < self._phase[2]:
            self._phase = (phase, now, done)
        if best is not None:
            self.best = best
        if not self.live:
            return
        _, since, done0 = self._phase
        rate = (done - done0) / max(now - since, 1e-6)
        eta = f"{(total - done) / rate:.0f}s" if rate > 0 else "?"
        best_text = f" | best val {self.best:.4f}" if self.best is not None else ""
        self.stream.write(f"\r\x1b[K{self._prefix()} {phase} {done}/{total}{best_text} | ETA {eta}")
        self.stream.flush()
        self._status_shown = True
