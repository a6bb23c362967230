"""The wall-clock budget of a command: a deadline counted from the command's start.

``run.sh`` exports ``TIMEBOX_START`` (epoch seconds) before anything else, so interpreter
start-up and imports are counted too, and ``TIMEBOX_START_PID``, the process it is for (run.sh
execs Python, which keeps its PID): a child that inherits both (a trial a tuner starts) counts
from its own start.

Example::

    budget = Budget(parse_duration("5m"))
    if budget.remaining() < reserve_s: ...
"""

from __future__ import annotations

import os
import re
import time

from .errors import UsageError

_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0}


def parse_duration(text: str) -> float:
    """Seconds in ``90``, ``90s``, ``10m``, ``3h``, ``1h30m`` or ``1.5h``."""
    text = text.strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        seconds = float(text)
    else:
        parts = re.findall(r"(\d+(?:\.\d+)?)([hms])", text)
        if not parts or "".join(n + u for n, u in parts) != text:
            raise UsageError(f"cannot read the duration {text!r}; write it like 90s, 10m, 3h or 1h30m")
        seconds = sum(float(n) * _UNITS[u] for n, u in parts)
    if seconds <= 0:
        raise UsageError(f"the duration {text!r} must be positive")
    return seconds


def command_start() -> float:
    """When this command started: ``$TIMEBOX_START`` if set for this process, else now. It is for this process
    unless ``$TIMEBOX_START_PID`` names another."""
    if os.environ.get("TIMEBOX_START_PID", str(os.getpid())) != str(os.getpid()):
        return time.time()
    try:
        return float(os.environ["TIMEBOX_START"])
    except (KeyError, ValueError):
        return time.time()


class Budget:
    """A deadline ``total_s`` seconds after ``start`` (default: :func:`command_start`)."""

    def __init__(self, total_s: float, start: float | None = None):
        self.total_s = float(total_s)
        self.start = command_start() if start is None else start
        self.deadline = self.start + self.total_s
        self.interrupted = False

    def interrupt(self) -> None:
        """End the run early (SIGTERM, Ctrl-C): from now on :meth:`expired` is true."""
        self.interrupted = True

    def elapsed(self) -> float:
        return time.time() - self.start

    def remaining(self) -> float:
        return self.deadline - time.time()

    def expired(self, reserve_s: float = 0.0) -> bool:
        """True once less than ``reserve_s`` seconds are left, or after :meth:`interrupt`."""
        return self.interrupted or self.remaining() <= reserve_s
