"""One trial: an ``online`` run in its own subprocess and process group, stopped at its deadline, scored.

Each trial gets a fresh TensorFlow runtime (memory cannot leak from one trial to the next), its own budget,
and the search's decoded-image cache. A trial that runs past its budget plus ``grace_s``, or is still
running at the search's deadline, gets SIGTERM (an online run then keeps its best output), then SIGKILL.

Example::

    outcome = run_trial(TrialSpec(folder, data, settings, seed=0, budget_s=60), stop_at=deadline)
    outcome.state, outcome.accuracy        # "COMPLETE", 0.91
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from timebox.fileio import atomic_write_text

from .subsample import Subsample

ROOT = Path(__file__).resolve().parents[1]
ONLINE = [sys.executable, "-m", "timebox", "online"]


@dataclass(frozen=True)
class TrialSpec:
    """What a trial runs: ``settings`` (a ``--config`` file's object) on ``data`` with ``budget_s``."""

    folder: Path
    data: Subsample
    settings: dict[str, Any]
    seed: int
    budget_s: float
    cache_dir: Path | None = None  # the decoded-image cache, shared by the search's trials
    feature_dir: Path | None = None  # the backbone activations, shared likewise (online --feature-cache)
    command: tuple[str, ...] = tuple(ONLINE)  # tests put a small stand-in here
    grace_s: float = 10.0  # past its budget, a trial gets SIGTERM
    kill_after_s: float = 5.0  # ... and SIGKILL this long after SIGTERM


@dataclass
class TrialOutcome:
    """How a trial ended: ``state`` is Optuna's name (COMPLETE, PRUNED: stopped at the search's deadline
    with an output, FAIL); ``accuracy`` on the held-out images; ``reason`` for anything but COMPLETE."""

    state: str
    accuracy: float | None
    wall_s: float
    reason: str = ""
    exit_code: int | None = None
    shares: dict[str, float] = field(default_factory=dict)  # share of the trial's time per phase


def run_trial(spec: TrialSpec, stop_at: float,
              on_start: Callable[[Callable[[], None]], None] = lambda stop_it: None) -> TrialOutcome:
    """Run ``spec`` until it ends, its own deadline (budget + grace) or ``stop_at`` (the search's deadline).
    ``on_start`` is given a function that stops the trial now (the tuner's SIGTERM handler calls it)."""
    spec.folder.mkdir(parents=True, exist_ok=True)
    config = spec.folder / "config.json"
    atomic_write_text(config, json.dumps({**spec.settings, "seed": spec.seed}, indent=1, sort_keys=True))
    start = time.time()
    own_end = start + spec.budget_s + spec.grace_s
    stopped: list[str] = []
    with open(spec.folder / "trial.log", "ab") as log:
        proc = subprocess.Popen([*spec.command, *_arguments(spec, config)], stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=_environment(), start_new_session=True, cwd=ROOT)
        on_start(lambda: (stopped.append("the tuner was stopped"), _signal_group(proc, signal.SIGTERM)))
        if _wait(proc, min(own_end, stop_at), spec.kill_after_s):
            stopped.append("stopped at the search's deadline" if stop_at < own_end else
                           f"ran {time.time() - start - spec.budget_s:.0f}s past its {spec.budget_s:g}s budget: "
                           "stopped")
    return _outcome(spec, proc.returncode, time.time() - start, stopped[0] if stopped else "")


def _outcome(spec: TrialSpec, code: int, wall: float, stopped: str) -> TrialOutcome:
    accuracy = score(spec.folder / "out" / "predictions.csv", spec.data.val_labels)
    shares = phase_shares(spec.folder / "out" / "report" / "summary.json")
    if stopped and "past its" not in stopped:  # its best output so far counts, but not as a finished trial
        return TrialOutcome("PRUNED" if accuracy is not None else "FAIL", accuracy, wall, stopped, code, shares)
    if stopped:
        return TrialOutcome("FAIL", accuracy, wall, stopped, code, shares)
    if code != 0 or accuracy is None:
        why = f"exit {code}: " + (_last_error(spec.folder / "trial.log") if code else "no complete predictions.csv")
        return TrialOutcome("FAIL", accuracy, wall, why, code, shares)
    return TrialOutcome("COMPLETE", accuracy, wall, "", 0, shares)


def _arguments(spec: TrialSpec, config: Path) -> list[str]:
    args = ["--train-dir", str(spec.data.train), "--test-dir", str(spec.data.val), "--out", str(spec.folder / "out"),
            "--budget", f"{spec.budget_s:g}s", "--config", str(config)]
    for flag, folder in (("--cache-dir", spec.cache_dir), ("--feature-cache", spec.feature_dir)):
        args += [flag, str(folder)] if folder is not None else []
    return args


def _environment() -> dict[str, str]:
    """The trial counts its budget from its own start (not the tuner's), and finds the timebox package."""
    env = {k: v for k, v in os.environ.items() if k not in ("TIMEBOX_START", "TIMEBOX_START_PID")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "submission"), *filter(None, [env.get("PYTHONPATH")])])
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return env


def _wait(proc: subprocess.Popen, stop_at: float, kill_after_s: float) -> bool:
    """Wait for ``proc``; at ``stop_at`` SIGTERM its group, SIGKILL after ``kill_after_s``. True if stopped."""
    try:
        proc.wait(timeout=max(0.0, stop_at - time.time()))
        return False
    except subprocess.TimeoutExpired:
        pass
    _signal_group(proc, signal.SIGTERM)
    try:
        proc.wait(timeout=kill_after_s)
    except subprocess.TimeoutExpired:
        _signal_group(proc, signal.SIGKILL)
        proc.wait()
    return True


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass


def score(predictions: Path, labels: dict[str, int]) -> float | None:
    """Accuracy of ``predictions`` (filename,label,... rows) on ``labels``; None unless every file has a row."""
    try:
        with open(predictions, newline="", encoding="utf-8", errors="surrogateescape") as f:
            rows = {r[0]: r[1] for r in list(csv.reader(f))[1:] if len(r) >= 2}
    except OSError:
        return None
    if set(labels) - set(rows):
        return None
    return sum(str(label) == rows[name] for name, label in labels.items()) / len(labels)


def phase_shares(summary: Path) -> dict[str, float]:
    """The share of the trial's wall time per phase, from its report (empty if it wrote none)."""
    try:
        data = json.loads(summary.read_text())
    except (OSError, ValueError):
        return {}
    phases, wall = data.get("phases") or [], data.get("wall_s") or 0
    shares: dict[str, float] = {}
    for p in phases if wall else []:
        shares[p["phase"]] = shares.get(p["phase"], 0.0) + p["actual_s"] / wall
    return shares


def _last_error(log: Path) -> str:
    try:
        lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return "no log"
    errors = [line for line in lines if line.startswith("error:")]
    return (errors or lines or ["no output"])[-1][:300]
