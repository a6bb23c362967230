"""The search space: which settings a trial may change, and to what, read from a TOML file.

Each line names a setting of :data:`timebox.settings.SETTINGS` and the values to try: a list (one of these;
``"null"`` is the setting's derived default) or a table ``{low, high, log}`` (a number in that range). Every
value is checked as ``online --config`` checks it, and an error names the file and line.

Example::

    space = read_space(Path("offline_tuning/space.toml"))
    settings = space.suggest(trial)          # {"size": 192, "finetune_lr": 0.00031, ...}
"""

from __future__ import annotations

import math
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna

from timebox.errors import UsageError
from timebox.settings import SETTING

DEFAULT_SPACE = Path(__file__).resolve().parent / "space.toml"
NOT_SEARCHED = ("seed", "val_fraction", "layout", "weights", "cache_max_gb", "margin_s")  # the tuner sets these


@dataclass(frozen=True)
class Dimension:
    """One searched setting: ``choices`` (a list) or ``low``..``high`` (``log`` scale)."""

    name: str
    choices: tuple[Any, ...] | None = None
    low: float | None = None
    high: float | None = None
    log: bool = False


@dataclass(frozen=True)
class SearchSpace:
    """The searched settings, in file order."""

    path: Path
    dimensions: tuple[Dimension, ...]

    def suggest(self, trial: optuna.Trial) -> dict[str, Any]:
        """The settings of a sampled trial (``"null"`` becomes None)."""
        settings = {}
        for d in self.dimensions:
            if d.choices is not None:
                value = trial.suggest_categorical(d.name, d.choices)
            elif SETTING[d.name].kind is int:
                value = trial.suggest_int(d.name, int(d.low), int(d.high), log=d.log)
            else:
                value = trial.suggest_float(d.name, d.low, d.high, log=d.log)
            settings[d.name] = None if value == "null" else value
        return settings


def read_space(path: Path) -> SearchSpace:
    """The space in ``path``; a UsageError naming the file, the line and the fix for anything wrong."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"--space {path}: cannot read it ({exc.strerror}); pass a TOML file like "
                         f"{DEFAULT_SPACE}") from None
    try:
        table = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{path}: not valid TOML: {exc}; see {DEFAULT_SPACE} for the form") from None
    lines = text.splitlines()
    dims = tuple(_dimension(path, _line_of(lines, name), name, value) for name, value in table.items())
    if not dims:
        raise UsageError(f"{path}: names no setting; give at least one line like size = [192, 224]")
    return SearchSpace(path, dims)


def _line_of(lines: list[str], name: str) -> int:
    pattern = re.compile(rf"^\s*[\"']?{re.escape(name)}[\"']?\s*[=.]")
    return next((i + 1 for i, line in enumerate(lines) if pattern.match(line)), 0)


def _dimension(path: Path, line: int, name: str, value: Any) -> Dimension:
    where = f"{path}, line {line}"
    if name not in SETTING:
        raise UsageError(f"{where}: {name!r} is not a setting; the settings are those of docs/settings.md "
                         f"({', '.join(sorted(SETTING))})")
    if name in NOT_SEARCHED:
        raise UsageError(f"{where}: {name} is set by tune itself (--seed, the subsample); remove the line")
    setting = SETTING[name]
    if isinstance(value, list):
        if not value:
            raise UsageError(f"{where}: {name} lists no value; list at least one")
        choices = tuple(value)
        for choice in choices:
            setting.check(None if choice == "null" and setting.nullable else choice, where)
        return Dimension(name, choices=choices)
    if isinstance(value, dict):
        return _range(where, name, value)
    raise UsageError(f"{where}: {name} = {value!r}; write a list of values or a table {{low = .., high = ..}}")


def _range(where: str, name: str, value: dict) -> Dimension:
    setting = SETTING[name]
    if setting.kind not in (int, float):
        raise UsageError(f"{where}: {name} is not a number; list its values instead, e.g. {name} = [...]")
    extra = set(value) - {"low", "high", "log"}
    if extra or "low" not in value or "high" not in value:
        raise UsageError(f"{where}: {name} needs exactly low, high and optionally log (got {', '.join(value)})")
    low, high, log = setting.check(value["low"], where), setting.check(value["high"], where), value.get("log", False)
    if not isinstance(log, bool):
        raise UsageError(f"{where}: {name}'s log is {log!r}; write log = true or false")
    if not low < high:
        raise UsageError(f"{where}: {name}'s low ({low}) must be below its high ({high})")
    if log and (low <= 0 or not math.isfinite(high)):
        raise UsageError(f"{where}: {name} on a log scale needs 0 < low")
    return Dimension(name, low=low, high=high, log=log)
