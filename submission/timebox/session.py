"""One session of an online run: the budget (less what earlier sessions of a resumed run spent), the run
state, SIGTERM/SIGINT, Python's garbage collection, the progress log, the timeline and the notes.

Example::

    with Session(cfg, state) as session:
        with session.watch(outputs.ensure_exists):
            ...
            session.phase("head", started, planned_s=20.0, epochs=40)
"""

from __future__ import annotations

import gc
import shutil
import signal
import time
from pathlib import Path
from typing import Any, Callable

from .budget import Budget, command_start
from .events import RunEvents
from .progress import Progress
from .recovery import RunState
from .watchdog import FIRE_EARLY_S, Watchdog


class Session:
    """A context manager: signals end the run early (``budget.interrupt``); Python's cyclic garbage collection is
    off (a collection inside Keras' h5py weight saving can deadlock on h5py's global lock, h5py#2019: it stalled
    7 runs, bench/RESULTS.md, 2026-11-24 night) and runs only at :meth:`collect_garbage`."""

    def __init__(self, cfg: Any, state: RunState | None = None):
        self.cfg, self.out = cfg, Path(cfg.out)
        if state is None:
            state = RunState(self.out / "state")
            state.begin(cfg.identity(), cfg.resume, command_start())
        self.state, self.spent = state, state.spent_s
        self.budget = Budget(cfg.budget_s - state.spent_s, state.start)
        self.notes: list[str] = []
        self.phases: list[dict] = []  # the timeline: each phase's start, plan and seconds
        self.scores: list[dict] = []  # every model scored in this session: time, phase, epoch, val accuracy
        self.events = RunEvents(self.out / "report" / "tensorboard", self.budget.start - self.spent)  # TensorBoard
        self.collected_at = time.time()
        self._handlers: dict = {}
        self._gc_was_enabled = False

    def __enter__(self) -> "Session":
        self._handlers = {s: signal.signal(s, lambda *_: self.budget.interrupt()) for s in (signal.SIGTERM,
                                                                                            signal.SIGINT)}
        self._gc_was_enabled = gc.isenabled()
        gc.disable()
        self.out.mkdir(parents=True, exist_ok=True)
        self.log = Progress(self.budget, log_file=self.out / "report" / "log.txt", resumed=self.resumed)
        if self.resumed:
            self.log(f"resuming: earlier sessions spent {self.spent:.1f}s of the {self.cfg.budget_s:.0f}s budget; "
                     f"{self.budget.remaining():.1f}s left")
        else:
            shutil.rmtree(self.out / "checkpoints", ignore_errors=True)  # an earlier run's checkpoints don't count
        return self

    def __exit__(self, *exc) -> None:
        if self._gc_was_enabled:
            gc.enable()
        self.state.close()
        self.events.close()
        for s, h in self._handlers.items():
            signal.signal(s, h)

    @property
    def resumed(self) -> bool:
        return self.spent > 0

    def wall_s(self) -> float:
        """Seconds of the budget spent, by earlier sessions too."""
        return self.spent + self.budget.elapsed()

    def watch(self, on_fire: Callable[[], None]) -> Watchdog:
        """A watchdog that runs ``on_fire`` and exits just before the deadline if anything stalls."""
        stacks = self.out / "report" / "watchdog_stacks.txt"
        return Watchdog(self.budget.deadline - FIRE_EARLY_S, on_fire, stacks=stacks)

    def phase(self, name: str, started: float, planned_s: float | None, **info) -> None:
        """A phase's line in the timeline: its start in the run, its planned and its actual seconds."""
        self.phases.append({"phase": name, "start_s": round(started - self.budget.start + self.spent, 2),
                            "planned_s": planned_s, "actual_s": round(time.time() - started, 2), **info})

    def note(self, text: str) -> None:
        """A note for the report: why the run did what it did."""
        self.notes.append(text)

    def collect_garbage(self, every_s: float | None = None) -> None:
        """Python's cyclic garbage collection, at most every ``every_s`` (default: the setting ``gc_every_s``);
        called only where no h5py call is under way."""
        if time.time() - self.collected_at >= (self.cfg.gc_every_s if every_s is None else every_s):
            gc.collect()
            self.collected_at = time.time()
