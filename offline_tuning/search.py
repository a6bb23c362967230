"""``tune``: the search as a short sequence of named steps, owning the wall clock.

Draw the subsample, read the space, join the study, agree on the deadline, run trials until nothing more fits,
write the results. The leaderboard and ``best_config.json`` are rewritten after every trial, so a search
killed at any moment leaves them; the plots come at the end, inside the reserve.

Example::

    result = run_tune(TuneConfig(Path("data/train"), budget_s=1800, out=Path("TUNE")))
    result.best_settings                     # what ``online --config TUNE/best_config.json`` runs
"""

from __future__ import annotations

import json
import signal
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import optuna

from timebox.budget import Budget
from timebox.filelock import FileLock
from timebox.fileio import atomic_write_text

from .leaderboard import Leaderboard, setup_share, write_results
from .schedule import DEFAULTS_KEY, DONE, WAIT, Job, Schedule, config_key, next_job, plan, plan_to
from .space import DEFAULT_SPACE, SearchSpace, read_space
from .study import WORKER, SharedStudy, open_study
from .subsample import Subsample, draw_subsample
from .trial import ONLINE, TrialOutcome, TrialSpec, run_trial


@dataclass
class TuneConfig:
    """A search: its data, budget and folder, and how it is run (see ``./run.sh tune --help``)."""

    data: Path
    budget_s: float
    out: Path
    space: Path = DEFAULT_SPACE
    storage: str | None = None  # None: the journal file in ``out``
    study: str = "tune"
    n_train: int | None = 1000  # None: every image but the held-out ones
    n_val: int = 300
    seed: int = 0
    min_trial_s: float | None = None  # the first rung's trial budget (None: budget / 30, 30 s to 5 min)
    min_trial_floor_s: float = 30.0  # online's shortest useful run on 1,000/300 (bench/RESULTS.md, "tune: trials")
    warmup_s: float = 60.0  # the plain run that decodes and extracts for every trial (same section); 0: none
    target: tuple[float, int] | None = None  # (budget s, training images) of the online run the search stands for
    eta: int = 3  # each rung keeps 1/eta of the configurations and gives them eta times the time
    overhead_s: float = 3.0  # a trial's seconds beyond its budget: process exit, scoring
    reserve_s: float = 20.0  # the end: stopping the last trials (kill_after_s), the leaderboard and the plots
    trial_command: tuple[str, ...] = tuple(ONLINE)
    apply_to: Path | None = None  # also write the best settings here (``--apply``: submission/config.json)

    def first_rung_s(self) -> float:
        return self.min_trial_s or min(max(self.budget_s / 30, self.min_trial_floor_s), 300.0)


@dataclass
class TuneResult:
    best_settings: dict[str, Any] | None
    leaderboard: Path
    trials_run: int
    notes: list[str] = field(default_factory=list)


class _Stop:
    """SIGTERM/SIGINT to the tuner: stop the running trial (it keeps its output) and write the results."""

    def __init__(self) -> None:
        self.requested = False
        self.stop_trial: Callable[[], None] = lambda: None

    def __call__(self, signum, frame) -> None:
        self.requested = True
        self.stop_trial()


def run_tune(cfg: TuneConfig, log: Callable[[str], None] = print) -> TuneResult:
    budget = Budget(cfg.budget_s)
    stop = _Stop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, stop)
    cfg.out.mkdir(parents=True, exist_ok=True)
    data = draw_subsample(cfg.data, cfg.out / "data", cfg.n_train, cfg.n_val, cfg.seed)
    space = read_space(cfg.space)
    shared = open_study(cfg.out, cfg.storage, cfg.study)
    warm_up(cfg, data, budget.deadline - cfg.reserve_s, stop, log)
    deadline, schedule = _agree(shared, cfg, budget.deadline - cfg.reserve_s, data.n_train, log)
    log(f"tune: {len(data.val_labels)} held-out images, study {cfg.study!r} in {shared.location}; rungs "
        + ", ".join(f"{r.slots} x {r.budget_s:g}s" for r in schedule.rungs)
        + f"; trials end by {time.strftime('%H:%M:%S', time.localtime(deadline))}")
    board = Leaderboard(cfg.out, len(data.val_labels))
    ran = _run_trials(cfg, shared, space, data, schedule, deadline, stop, board, log)
    if not stop.requested:  # this search is over: a later run on the study starts a new one instead of joining it
        with shared.deciding():
            shared.study.set_user_attr("ended", deadline)
    best = write_results(board, shared.study, cfg.apply_to, plots=True)
    log(board.summary(shared.study))
    if (share := setup_share(shared.study)) is not None:
        log(f"decoding and extraction took {100 * share:.0f}% of the trials' time; the rest went to training")
    return TuneResult(best, board.csv_path, ran, board.notes)


def warm_up(cfg: TuneConfig, data: Subsample, deadline: float, stop: _Stop, log: Callable[[str], None]) -> None:
    """One plain online run of ``warmup_s`` on the subsample (``OUT/warmup/``), before the search plans its
    rungs: it decodes every image into ``OUT/cache`` and stores the backbone's activations in ``OUT/features``,
    so the trials spend their time training. Once per folder (a resumed search skips it; a second worker
    waits for it); skipped when it would leave no room for a trial."""
    folder, marker = cfg.out / "warmup", cfg.out / "warmup" / "outcome.json"
    if not cfg.warmup_s or marker.exists():
        return
    if deadline - time.time() < cfg.warmup_s + cfg.first_rung_s() + 2 * cfg.overhead_s:
        log(f"warm-up skipped: {cfg.warmup_s:g}s and one {cfg.first_rung_s():g}s trial do not fit the budget")
        return
    with FileLock(cfg.out / "warmup.lock").held(exclusive=True):
        if marker.exists():
            return
        spec = TrialSpec(folder, data, {}, cfg.seed, cfg.warmup_s, cfg.out / "cache", cfg.out / "features",
                         cfg.trial_command)
        log(f"warm-up: the defaults for {cfg.warmup_s:g}s, decoding and extracting for every trial")
        outcome = run_trial(spec, deadline, on_start=lambda stop_it: setattr(stop, "stop_trial", stop_it))
        stop.stop_trial = lambda: None
        accuracy = "-" if outcome.accuracy is None else f"{100 * outcome.accuracy:.2f}%"
        log(f"warm-up: {outcome.state}, held-out accuracy {accuracy} in {outcome.wall_s:.0f}s"
            + (f" ({outcome.reason})" if outcome.reason else ""))
        atomic_write_text(marker, json.dumps(asdict(outcome), indent=1) + "\n")


def _agree(shared: SharedStudy, cfg: TuneConfig, own_deadline: float, n_train: int,
           log: Callable[[str], None]) -> tuple[float, Schedule]:
    """The search's deadline and schedule: those of a search still running in the study (joined: a worker of it
    is still running, or was killed), else this worker's, stored for the others."""
    with shared.deciding():
        attrs = shared.study.user_attrs
        deadline = attrs.get("deadline", 0)
        if deadline > time.time() + cfg.first_rung_s() and attrs.get("ended") != deadline:
            return min(attrs["deadline"], own_deadline), Schedule.from_json(attrs["schedule"])
        schedule = _plan(cfg, own_deadline - time.time(), n_train, log)
        shared.study.set_user_attr("deadline", own_deadline)
        shared.study.set_user_attr("schedule", schedule.to_json())
        return own_deadline, schedule


def _plan(cfg: TuneConfig, total_s: float, n_train: int, log: Callable[[str], None]) -> Schedule:
    """The rungs: up to the ``--target`` run's seconds per training image when it names one and they fit, else
    from the first rung's budget."""
    if cfg.target is not None:
        top_s = cfg.target[0] / cfg.target[1] * n_train
        if schedule := plan_to(top_s, total_s, cfg.min_trial_floor_s, cfg.overhead_s, cfg.eta):
            return schedule
        log(f"--target: rungs up to {top_s:.0f}s a trial ({cfg.target[0]:g}s for {cfg.target[1]} images, here "
            f"{n_train}) from at least {cfg.min_trial_floor_s:g}s do not fit {total_s:.0f}s; planned from the budget")
    return plan(total_s, cfg.first_rung_s(), cfg.overhead_s, cfg.eta)


def _run_trials(cfg: TuneConfig, shared: SharedStudy, space: SearchSpace, data: Subsample, schedule: Schedule,
                deadline: float, stop: _Stop, board: Leaderboard, log: Callable[[str], None]) -> int:
    ran = 0
    while not stop.requested:
        with shared.deciding():
            job = next_job(schedule, shared.views(), deadline - time.time(), cfg.seed)
            trial = settings = None
            if isinstance(job, Job):
                trial, settings = _create(shared.study, space, job)
        if job == DONE:
            return ran
        if job == WAIT:
            board.progress(shared.study, deadline, log)
            time.sleep(min(2.0, max(0.0, deadline - time.time())))
            continue
        spec = TrialSpec(cfg.out / "trials" / f"{trial.number:04d}", data, settings, job.seed, job.budget_s,
                         cfg.out / "cache", cfg.out / "features", cfg.trial_command)
        with shared.heartbeat(trial):
            outcome = run_trial(spec, deadline, on_start=lambda stop_it: setattr(stop, "stop_trial", stop_it))
        stop.stop_trial = lambda: None
        _finish(shared.study, trial, outcome)
        ran += 1
        board.write(shared.study)
        board.progress(shared.study, deadline, log)
    return ran


def _create(study: optuna.Study, space: SearchSpace, job: Job) -> tuple[optuna.Trial, dict[str, Any]]:
    """A new trial for ``job`` (its settings sampled when the job names none), its attributes set."""
    trial = study.ask()
    trial.set_user_attr("worker", WORKER)
    settings = space.suggest(trial) if job.config is None else json.loads(job.config)
    # "rung" goes last: readers outside the decision lock (leaderboard, plots) take a trial with a rung as
    # fully described, and each attribute is its own write that another worker may see before the next one.
    for key, value in (("budget_s", job.budget_s), ("seed", job.seed), ("config", config_key(settings)),
                       ("defaults", job.config == DEFAULTS_KEY), ("rung", job.rung)):
        trial.set_user_attr(key, value)
    return trial, settings


def _finish(study: optuna.Study, trial: optuna.Trial, outcome: TrialOutcome) -> None:
    for key, value in (("wall_s", round(outcome.wall_s, 1)), ("accuracy", outcome.accuracy),
                       ("shares", {k: round(v, 3) for k, v in outcome.shares.items()})):
        trial.set_user_attr(key, value)
    if outcome.reason:
        trial.set_user_attr("reason", outcome.reason)
    state = optuna.trial.TrialState[outcome.state]
    study.tell(trial, outcome.accuracy if state == optuna.trial.TrialState.COMPLETE else None, state=state)
