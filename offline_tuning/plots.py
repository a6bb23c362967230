"""The search in pictures (matplotlib, PNG in the tuning folder).

- ``accuracy_over_time.png``: every trial's held-out accuracy at the moment it ended, one colour per rung
  (its budget), failed and stopped trials marked, and the best so far.
- ``settings.png``: one panel per searched setting, the first rung's accuracies against its values: which
  settings mattered.
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import optuna

from timebox.plots import save_png  # it also sets matplotlib's Agg backend
from timebox.settings import SETTING


def write_plots(folder: Path, study: optuna.Study) -> list[Path]:
    trials = [t for t in study.get_trials(deepcopy=False) if "rung" in t.user_attrs and t.datetime_start]
    if not trials:
        return []
    return [_over_time(folder / "accuracy_over_time.png", trials), _settings(folder / "settings.png", trials)]


def _over_time(path: Path, trials: list[optuna.trial.FrozenTrial]) -> Path:
    start = min(t.datetime_start for t in trials)
    fig, ax = plt.subplots(figsize=(8, 4.5))
    rungs = sorted({t.user_attrs["rung"] for t in trials})
    colours = plt.get_cmap("viridis")(np.linspace(0.1, 0.85, max(len(rungs), 1)))
    done = sorted((t for t in trials if t.user_attrs.get("accuracy") is not None and t.datetime_complete),
                  key=lambda t: t.datetime_complete)
    for colour, rung in zip(colours, rungs):
        for state, marker in (("COMPLETE", "o"), ("PRUNED", "s"), ("FAIL", "x")):
            pts = [t for t in done if t.user_attrs["rung"] == rung and t.state.name == state]
            if pts:
                ax.scatter([(t.datetime_complete - start).total_seconds() / 60 for t in pts],
                           [100 * t.user_attrs["accuracy"] for t in pts], color=colour, marker=marker,
                           label=f"rung {rung} ({pts[0].user_attrs['budget_s']:g} s), {state.lower()}")
    complete = [t for t in done if t.state.name == "COMPLETE"]
    if complete:
        best = np.maximum.accumulate([100 * t.user_attrs["accuracy"] for t in complete])
        ax.step([(t.datetime_complete - start).total_seconds() / 60 for t in complete], best, where="post",
                color="grey", alpha=0.6, label="best so far")
    ax.set(xlabel="minutes into the search", ylabel="held-out accuracy (%)", title="Trials over time")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    save_png(fig, path, dpi=110)
    return path


def _settings(path: Path, trials: list[optuna.trial.FrozenTrial]) -> Path:
    first = [t for t in trials if t.user_attrs["rung"] == 0 and t.user_attrs.get("accuracy") is not None]
    names = sorted({k for t in first for k in json.loads(t.user_attrs["config"])})
    cols = min(3, max(len(names), 1))
    rows = max(1, -(-len(names) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 2.8 * rows), squeeze=False)
    for ax, name in zip(axes.flat, names):
        pts = [(json.loads(t.user_attrs["config"]).get(name, SETTING[name].default), 100 * t.user_attrs["accuracy"])
               for t in first]  # the defaults' trial shows the settings' defaults
        values = [v for v, _ in pts]
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values) and len(set(values)) > 3:
            ax.scatter(values, [a for _, a in pts], s=14)
            if min(values) > 0 and max(values) / min(values) > 20:
                ax.set_xscale("log")
        else:
            labels = sorted({json.dumps(v) for v in values})
            x = [labels.index(json.dumps(v)) for v in values]
            jitter = np.random.default_rng(0).uniform(-0.12, 0.12, len(x))
            ax.scatter(np.array(x) + jitter, [a for _, a in pts], s=14)
            ax.set_xticks(range(len(labels)), labels, fontsize=7, rotation=20)
        ax.set_title(name, fontsize=9)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    fig.suptitle("Held-out accuracy (%) of the first rung's trials by setting", fontsize=10)
    fig.tight_layout()
    save_png(fig, path, dpi=110)
    return path
