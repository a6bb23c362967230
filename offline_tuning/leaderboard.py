"""The search's results: ``leaderboard.csv`` and ``.md``, ``best_config.json``, the progress line, the plots.

Every worker rewrites them from the study after each trial (atomically), so they are never half-written and
always hold every worker's trials. The winner is the configuration with the best mean held-out accuracy on the
highest rung that completed a trial (the top rung runs each of its configurations with several seeds).

Example::

    board = Leaderboard(Path("TUNE"), n_val=300)
    board.write(study)                       # TUNE/leaderboard.csv, leaderboard.md, best_config.json
"""

from __future__ import annotations

import csv
import io
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import optuna

from timebox.fileio import atomic_write_text

from .schedule import DEFAULTS_KEY, TrialView, ranking
from .study import trial_view

COLUMNS = ("rank", "trial", "rung", "budget_s", "seed", "state", "val_accuracy", "stderr", "wall_s", "settings",
           "reason")


def _views(study: optuna.Study) -> list[TrialView]:
    """The scheduler's view of every trial the search ran."""
    return [trial_view(t) for t in study.get_trials(deepcopy=False) if "rung" in t.user_attrs]


@dataclass
class Leaderboard:
    out: Path
    n_val: int
    notes: list[str] = field(default_factory=list)
    _last_line: str = ""

    @property
    def csv_path(self) -> Path:
        return self.out / "leaderboard.csv"

    def rows(self, study: optuna.Study) -> list[dict[str, Any]]:
        """One row per trial: higher rungs first, then by held-out accuracy."""
        trials = [t for t in study.get_trials(deepcopy=False) if "rung" in t.user_attrs]
        trials.sort(key=lambda t: (-t.user_attrs["rung"], -(t.user_attrs.get("accuracy") or -1), t.number))
        rows = []
        for rank, t in enumerate(trials, 1):
            a, acc = t.user_attrs, t.user_attrs.get("accuracy")
            rows.append({"rank": rank, "trial": t.number, "rung": a["rung"], "budget_s": a["budget_s"],
                         "seed": a["seed"], "state": t.state.name,
                         "val_accuracy": None if acc is None else round(acc, 4),
                         "stderr": None if acc is None else round(math.sqrt(acc * (1 - acc) / self.n_val), 4),
                         "wall_s": a.get("wall_s"), "settings": "defaults" if a["config"] == "{}" else a["config"],
                         "reason": a.get("reason", "")})
        return rows

    def best(self, study: optuna.Study) -> tuple[dict[str, Any], int, list[float]] | None:
        """The winner's settings, its rung and its seeds' accuracies; None before any trial completed."""
        views = _views(study)
        for rung in sorted({v.rung for v in views}, reverse=True):
            ranked = ranking(views, rung)
            if ranked:
                config = ranked[0][0]
                values = [v.value for v in views if v.rung == rung and v.config == config and v.state == "COMPLETE"]
                return json.loads(config), rung, values
        return None

    def write(self, study: optuna.Study) -> dict[str, Any] | None:
        rows = self.rows(study)
        text = io.StringIO()
        writer = csv.DictWriter(text, COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_text(self.csv_path, text.getvalue())
        atomic_write_text(self.out / "leaderboard.md", self._markdown(rows, study))
        best = self.best(study)
        if best is not None:
            atomic_write_text(self.out / "best_config.json", json.dumps(best[0], indent=1, sort_keys=True) + "\n")
        return None if best is None else best[0]

    def _markdown(self, rows: list[dict[str, Any]], study: optuna.Study) -> str:
        lines = ["# Leaderboard", "", self.summary(study), "",
                 "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
        for r in rows:
            cells = ["" if r[c] is None else f"`{r[c]}`" if c == "settings" else str(r[c]) for c in COLUMNS]
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines) + "\n"

    def summary(self, study: optuna.Study | None = None) -> str:
        """The winner in one line: settings, mean accuracy and the seeds' spread."""
        best = None if study is None else self.best(study)
        if best is None:
            return "no trial completed: best_config.json is not written"
        settings, rung, values = best
        mean = sum(values) / len(values)
        spread = f" (seeds: {', '.join(f'{100 * v:.2f}' for v in values)})" if len(values) > 1 else ""
        defaults = dict(ranking(_views(study), rung)).get(DEFAULTS_KEY)
        beside = f"; the defaults {100 * defaults:.2f}% there" if settings and defaults is not None else ""
        return (f"best: {json.dumps(settings, sort_keys=True) if settings else 'the defaults'}, held-out accuracy "
                f"{100 * mean:.2f}%{spread} at rung {rung}{beside}")

    def progress(self, study: optuna.Study, deadline: float, log: Callable[[str], None]) -> None:
        """Trials running/done/failed, the best so far and the time left: one updating line on a terminal."""
        states = [t.state.name for t in study.get_trials(deepcopy=False) if "rung" in t.user_attrs]
        best = self.best(study)
        best_text = "-" if best is None else f"{100 * sum(best[2]) / len(best[2]):.2f}% (rung {best[1]})"
        left = max(0, int(deadline - time.time()))
        line = (f"tune: {states.count('RUNNING')} running, {states.count('COMPLETE')} done, "
                f"{states.count('PRUNED')} stopped, {states.count('FAIL')} failed | best {best_text} | "
                f"{left // 60}m{left % 60:02d}s left")
        if line == self._last_line:
            return
        self._last_line = line
        if sys.stdout.isatty():
            sys.stdout.write("\r\033[K" + line)
            sys.stdout.flush()
        else:
            log(line)


def setup_share(study: optuna.Study) -> float | None:
    """The share of the finished trials' time that went to decoding and extraction (online's setup and extract
    phases); None before a trial reported its phases."""
    spent = total = 0.0
    for t in study.get_trials(deepcopy=False):
        shares, wall = t.user_attrs.get("shares"), t.user_attrs.get("wall_s")
        if shares and wall:
            spent += (shares.get("setup", 0.0) + shares.get("extract", 0.0)) * wall
            total += wall
    return spent / total if total else None


def write_results(board: Leaderboard, study: optuna.Study, apply_to: Path | None, plots: bool) -> dict | None:
    """The final leaderboard, best_config.json (and its copy at ``apply_to``) and, with ``plots``, the PNGs."""
    if sys.stdout.isatty():
        sys.stdout.write("\n")
    best = board.write(study)
    if best is not None and apply_to is not None:
        atomic_write_text(apply_to, json.dumps(best, indent=1, sort_keys=True) + "\n")
    if plots:
        from .plots import write_plots

        write_plots(board.out, study)
    return best
