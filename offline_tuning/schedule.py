"""Successive halving by wall-clock time: rungs of trial budgets, and which trial a worker runs next.

Rung 0 runs many short trials (the first with a plain ``online`` run's settings); each later rung reruns the
best configurations of the rung below with ``eta`` times the budget; the top rung runs its few
configurations with ``seeds`` seeds each, so the winner is named on a mean, not on one noisy run. The defaults
are the incumbent: promoted to every rung beside the best (taking the last seat when they did not rank for one)
and winning ties, so a configuration replaces them only by beating them at the same budget and seeds. Each rung
is a fresh ``online`` run at its budget (an online run plans its whole schedule to its budget, so a run cut
short is not a shorter run). Pure functions: no Optuna, no clock.

Example::

    schedule = plan(total_s=585, min_trial_s=20, overhead_s=2)    # rungs 20 s x 15, 60 s x 4 (2 configs x 2 seeds)
    job = next_job(schedule, trials, time_left_s=500, seed=0)      # a Job, WAIT or DONE
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

DEFAULTS_KEY = "{}"  # the configuration of a plain online run: no setting changed


@dataclass(frozen=True)
class Rung:
    """``configs`` configurations, each run with ``seeds`` seeds, at ``budget_s`` (rung 0's ``configs`` is what
    the plan expects: it runs trials as long as they fit beside the later rungs)."""

    index: int
    budget_s: float
    configs: int
    seeds: int = 1

    @property
    def slots(self) -> int:
        return self.configs * self.seeds


@dataclass(frozen=True)
class Schedule:
    rungs: tuple[Rung, ...]
    overhead_s: float  # seconds a trial takes beyond its budget (process start and end, scoring)

    def cost_s(self, rung: Rung, slots: int) -> float:
        return slots * (rung.budget_s + self.overhead_s)

    def to_json(self) -> dict:
        return {"rungs": [[r.budget_s, r.configs, r.seeds] for r in self.rungs], "overhead_s": self.overhead_s}

    @classmethod
    def from_json(cls, data: dict) -> "Schedule":
        return cls(tuple(Rung(i, b, c, s) for i, (b, c, s) in enumerate(data["rungs"])), data["overhead_s"])


@dataclass(frozen=True)
class TrialView:
    """What the scheduler needs of a trial: its rung, configuration (canonical JSON), seed, state (Optuna's
    name) and value; ``retry``: it failed with no reason of its own (its worker died), so its slot is free."""

    number: int
    rung: int
    config: str
    seed: int
    state: str
    value: float | None = None
    retry: bool = False

    @property
    def fills_slot(self) -> bool:
        return not self.retry

    @property
    def finished(self) -> bool:
        return self.state in ("COMPLETE", "PRUNED", "FAIL")


@dataclass(frozen=True)
class Job:
    """Run one trial: ``config`` None means "sample a new configuration"."""

    rung: int
    budget_s: float
    config: str | None
    seed: int


WAIT, DONE = "wait", "done"


def config_key(settings: dict[str, Any]) -> str:
    """The canonical JSON of a configuration's settings."""
    return json.dumps(settings, sort_keys=True)


def plan(total_s: float, min_trial_s: float, overhead_s: float, eta: int = 3, top_configs: int = 2,
         seeds: int = 2, max_rungs: int = 3) -> Schedule:
    """The most rungs (up to ``max_rungs``) whose later rungs leave rung 0 at least ``eta`` times the
    configurations of rung 1; if even two do not fit, rung 0 and its best ``top_configs`` rerun at the same
    budget with ``seeds`` seeds (the winner is still named on a mean); else one rung."""
    for n_rungs in range(max_rungs, 1, -1):
        if schedule := _rungs(total_s, min_trial_s, overhead_s, n_rungs, eta, top_configs, seeds):
            return schedule
    confirm = Rung(1, min_trial_s, top_configs, seeds)  # no room for a longer rung: the best rerun with more seeds
    n0 = int((total_s - confirm.slots * (min_trial_s + overhead_s)) // (min_trial_s + overhead_s))
    if n0 >= eta * top_configs:
        return Schedule((Rung(0, min_trial_s, n0), confirm), overhead_s)
    return Schedule((Rung(0, min_trial_s, max(1, int(total_s // (min_trial_s + overhead_s)))),), overhead_s)


def plan_to(top_trial_s: float, total_s: float, floor_s: float, overhead_s: float, eta: int = 3,
            top_configs: int = 2, seeds: int = 2, max_rungs: int = 3) -> Schedule | None:
    """The most rungs (up to ``max_rungs``, at least two) whose top rung runs ``top_trial_s`` and whose first
    rung is at least ``floor_s``, rung 0 keeping ``eta`` times the configurations of rung 1; None if none fits.

    ``top_trial_s`` is the target run's seconds per training image times the tuning set's images, so the
    winner is chosen at the time per image the online run it stands for will have."""
    for n_rungs in range(max_rungs, 1, -1):
        first = top_trial_s / eta ** (n_rungs - 1)
        if first >= floor_s and (schedule := _rungs(total_s, first, overhead_s, n_rungs, eta, top_configs, seeds)):
            return schedule
    return None


def _rungs(total_s: float, min_trial_s: float, overhead_s: float, n_rungs: int, eta: int, top_configs: int,
           seeds: int) -> Schedule | None:
    """``n_rungs`` rungs from ``min_trial_s``, each ``eta`` times longer with 1/``eta`` of the configurations
    (the top one with ``seeds`` seeds), if rung 0 keeps ``eta`` times the configurations of rung 1."""
    budgets = [round(min_trial_s * eta ** r, 1) for r in range(n_rungs)]
    configs = [top_configs * eta ** (n_rungs - 1 - r) for r in range(n_rungs)]
    upper = [Rung(r, budgets[r], configs[r], seeds if r == n_rungs - 1 else 1) for r in range(1, n_rungs)]
    left = total_s - sum(r.slots * (r.budget_s + overhead_s) for r in upper)
    n0 = int(left // (min_trial_s + overhead_s))
    return Schedule((Rung(0, budgets[0], n0), *upper), overhead_s) if n0 >= eta * upper[0].configs else None


def ranking(trials: list[TrialView], rung: int) -> list[tuple[str, float]]:
    """The configurations of ``rung`` with a COMPLETE trial, best mean value first (ties: the defaults, then the
    first run)."""
    values: dict[str, list[float]] = {}
    for t in sorted(trials, key=lambda t: t.number):
        if t.rung == rung and t.state == "COMPLETE" and t.value is not None:
            values.setdefault(t.config, []).append(t.value)
    order = sorted(values.items(), key=lambda kv: (-sum(kv[1]) / len(kv[1]), kv[0] != DEFAULTS_KEY))
    return [(config, sum(v) / len(v)) for config, v in order]


def promoted(trials: list[TrialView], rung: Rung) -> list[str]:
    """The configurations of the rung below that ``rung`` reruns: its best ``rung.configs``, the defaults among
    them (with two seats or more, the last is theirs when they completed below but did not rank for one)."""
    below = [config for config, _ in ranking(trials, rung.index - 1)]
    best = below[: rung.configs]
    if rung.configs > 1 and DEFAULTS_KEY in below and DEFAULTS_KEY not in best:
        best = best[: rung.configs - 1] + [DEFAULTS_KEY]
    return best


def next_job(schedule: Schedule, trials: list[TrialView], time_left_s: float, seed: int) -> Job | str:
    """The next trial to run, WAIT (a running trial may still open a promotion) or DONE (nothing more fits).

    Later rungs come first: a rung's promotions start once the rung below is closed (it will start no more
    trials and all of its trials finished). A rung-0 trial starts only before any later rung has started and
    if its budget fits in ``time_left_s`` beside the later rungs' open slots; a promoted one if its own budget
    fits."""
    state = _State(schedule, [t for t in trials if t.fills_slot], time_left_s, seed)
    for rung in reversed(schedule.rungs):
        job = state.job_on(rung)
        if job is not None:
            return job
    return WAIT if any(not t.finished for t in state.filled) else DONE


@dataclass
class _State:
    schedule: Schedule
    filled: list[TrialView]
    time_left_s: float
    seed: int

    def job_on(self, rung: Rung) -> Job | None:
        if rung.index == 0:  # it takes all the time the later rungs leave (its planned count is a guide)
            if self._fits_first():
                first = not any(t.rung == 0 and t.config == DEFAULTS_KEY for t in self.filled)
                return Job(0, rung.budget_s, DEFAULTS_KEY if first else None, self.seed)
            return None
        if not self.closed(rung.index - 1):
            return None
        free = self._free_pairs(rung)
        if free and rung.budget_s + self.schedule.overhead_s <= self.time_left_s:
            return Job(rung.index, rung.budget_s, *free[0])
        return None

    def closed(self, index: int) -> bool:
        """Rung ``index`` will start no more trials and all it started have finished."""
        if any(t.rung == index and not t.finished for t in self.filled):
            return False
        rung = self.schedule.rungs[index]
        if index == 0:
            return not self._fits_first()
        if not self.closed(index - 1):
            return False
        return not self._free_pairs(rung) or rung.budget_s + self.schedule.overhead_s > self.time_left_s

    def _free_pairs(self, rung: Rung) -> list[tuple[str, int]]:
        """The (configuration, seed) pairs promoted to ``rung`` from the rung below that no trial took yet."""
        seeds = range(self.seed, self.seed + rung.seeds)
        return [(config, s) for config in promoted(self.filled, rung) for s in seeds
                if not any(t.rung == rung.index and t.config == config and t.seed == s for t in self.filled)]

    def _fits_first(self) -> bool:
        """Rung 0 can start another trial: no later rung has started (a new rung-0 result would change what
        they rerun) and one more fits beside the later rungs' open slots."""
        if any(t.rung > 0 for t in self.filled):
            return False
        rungs = self.schedule.rungs
        later = sum(self.schedule.cost_s(r, max(0, r.slots - self._count(r.index))) for r in rungs[1:])
        return rungs[0].budget_s + self.schedule.overhead_s + later <= self.time_left_s

    def _count(self, index: int) -> int:
        return sum(t.rung == index for t in self.filled)
