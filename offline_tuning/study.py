"""The Optuna study every worker of a search shares: its storage, a lock for deciding the next trial, the
search's deadline and schedule, and each trial's record.

Storage: Optuna's journal file in the tuning folder (one machine, no server), or PostgreSQL (several machines,
or one process per GPU) through Optuna's RDB storage with its heartbeat. SQLite and journal files on network
file systems are refused: their locks do not hold between several workers.

Example::

    shared = open_study(Path("TUNE"), storage=None, name="tune")
    with shared.deciding():            # one worker at a time picks and creates its next trial
        ...
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import optuna
from optuna.storages import JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from timebox.errors import UsageError
from timebox.filelock import FileLock

from .schedule import TrialView

JOURNAL = "journal.log"
NETWORK_FILE_SYSTEMS = ("nfs", "nfs4", "cifs", "smb3", "smbfs", "9p", "fuse.sshfs", "lustre", "glusterfs", "ceph",
                        "afs", "fuse.gcsfuse", "fuse.s3fs")
optuna.logging.set_verbosity(optuna.logging.WARNING)  # the leaderboard and the progress line say it
HEARTBEAT_S = 10  # RDB storage: a trial whose worker sent no heartbeat for GRACE_S is failed and run again
GRACE_S = 60
WORKER = f"{socket.gethostname()}:{os.getpid()}"


@dataclass
class SharedStudy:
    """The study, where it is stored, and the lock under which a worker decides and creates a trial."""

    study: optuna.Study
    location: str
    _lock: Any

    @contextlib.contextmanager
    def deciding(self) -> Iterator[None]:
        with self._lock():
            yield

    def views(self) -> list[TrialView]:
        """Every trial as the scheduler sees it (trials of this machine whose worker died are failed first)."""
        self._fail_dead_workers()
        return [trial_view(t) for t in self.study.get_trials(deepcopy=False) if "rung" in t.user_attrs]

    def heartbeat(self, trial: optuna.Trial) -> contextlib.AbstractContextManager:
        """While in it, the RDB storage hears from ``trial`` every HEARTBEAT_S (nothing for a journal)."""
        storage = self.study._storage
        if not isinstance(storage, RDBStorage):
            return contextlib.nullcontext()
        return _Heartbeat(storage, trial._trial_id)

    def _fail_dead_workers(self) -> None:
        storage = self.study._storage
        if isinstance(storage, RDBStorage):
            optuna.storages.fail_stale_trials(self.study)
            return
        host = socket.gethostname()
        for t in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            worker = t.user_attrs.get("worker", "")
            name, _, pid = worker.rpartition(":")
            if name == host and pid.isdigit() and not _alive(int(pid)):
                storage.set_trial_state_values(t._trial_id, TrialState.FAIL)


def open_study(folder: Path, storage: str | None, name: str) -> SharedStudy:
    """The study ``name`` in ``storage`` (None: the journal file in ``folder``), created if missing."""
    if storage is None:
        journal = folder / JOURNAL
        _refuse_network_fs(journal)
        backend = JournalStorage(JournalFileBackend(str(journal)))
        lock = FileLock(folder / "decide.lock")
        study = _load_or_create(backend, name)
        return SharedStudy(study, str(journal), lambda: lock.held(exclusive=True))
    if storage.startswith("sqlite"):
        raise UsageError(f"--storage {storage}: SQLite's locks do not hold between several workers; leave "
                         "--storage out for the journal file (one machine) or pass postgresql://... (several)")
    if not storage.startswith("postgresql"):
        raise UsageError(f"--storage {storage}: pass a postgresql://user@host/db URL, or leave it out for the "
                         f"journal file in {folder}")
    rdb, study = _open_rdb(storage, name)
    return SharedStudy(study, storage.split("@")[-1], lambda: _advisory_lock(rdb.engine, f"timebox tune {name}"))


def _open_rdb(url: str, name: str) -> tuple[RDBStorage, optuna.Study]:
    """Optuna's RDB storage at ``url`` and the study ``name``, set up under an advisory lock: workers starting
    together on an empty database would each create Optuna's tables, and all but one fail (duplicate key)."""
    from sqlalchemy import create_engine
    from sqlalchemy.exc import OperationalError
    from sqlalchemy.pool import NullPool

    engine = create_engine(url, poolclass=NullPool)
    try:
        with _advisory_lock(engine, "timebox tune setup"):
            rdb = RDBStorage(url, heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S,
                             engine_kwargs={"pool_pre_ping": True})
            return rdb, _load_or_create(rdb, name)
    except OperationalError as exc:
        raise UsageError(f"--storage {url.split('@')[-1]}: cannot reach the database ({exc.orig}); start the "
                         "server or fix the URL (postgresql://user:password@host:port/database)") from None
    finally:
        engine.dispose()


def _load_or_create(storage: optuna.storages.BaseStorage, name: str) -> optuna.Study:
    return optuna.create_study(storage=storage, study_name=name, direction="maximize",
                               sampler=CrashAwareTPE(n_startup_trials=8, multivariate=True), load_if_exists=True)


class CrashAwareTPE(optuna.samplers.TPESampler):
    """Optuna's TPE, shown each crashed trial (FAIL with a reason of its own) as a completed one of accuracy 0:
    plain TPE ignores failed trials, so it would sample a crashing combination of settings again and again."""

    def sample_relative(self, study, trial, search_space):
        return super().sample_relative(_WithCrashes(study), trial, search_space)

    def sample_independent(self, study, trial, param_name, param_distribution):
        return super().sample_independent(_WithCrashes(study), trial, param_name, param_distribution)


class _WithCrashes:
    """A study as the sampler reads it: crashed trials appear as COMPLETE with value 0."""

    def __init__(self, study: optuna.Study):
        self._study = study

    def __getattr__(self, name: str) -> Any:
        return getattr(self._study, name)

    def _get_trials(self, deepcopy: bool = True, states=None, use_cache: bool = False):
        trials = self._study._get_trials(deepcopy=deepcopy, states=states, use_cache=use_cache)
        if states is not None and TrialState.COMPLETE not in states:
            return trials
        crashed = self._study._get_trials(deepcopy=False, states=(TrialState.FAIL,), use_cache=use_cache)
        return trials + [optuna.trial.create_trial(state=TrialState.COMPLETE, value=0.0, params=t.params,
                                                   distributions=t.distributions)
                         for t in crashed if "reason" in t.user_attrs and t.params]


@contextlib.contextmanager
def _advisory_lock(engine, key: str) -> Iterator[None]:
    """PostgreSQL's advisory lock named ``key`` (e.g. per study): one worker on any machine holds it at a time."""
    from sqlalchemy import text

    with engine.connect() as conn:
        conn.execute(text("SELECT pg_advisory_lock(hashtext(:k))"), {"k": key})
        try:
            yield
        finally:
            conn.execute(text("SELECT pg_advisory_unlock(hashtext(:k))"), {"k": key})
            conn.commit()


def _refuse_network_fs(path: Path) -> None:
    target, best, fstype = str(path.resolve()), "", ""
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return
    for line in mounts:
        parts = line.split()
        if len(parts) >= 3 and (target == parts[1] or target.startswith(parts[1].rstrip("/") + "/")) \
                and len(parts[1]) > len(best):
            best, fstype = parts[1], parts[2]
    if fstype in NETWORK_FILE_SYSTEMS:
        raise UsageError(f"{path} is on a network file system ({fstype} at {best}): the journal's file locks do not "
                         "hold there; pass --out on a local disk, or --storage postgresql://... for several machines")


def trial_view(t: optuna.trial.FrozenTrial) -> TrialView:
    a = t.user_attrs
    return TrialView(t.number, a["rung"], a["config"], a["seed"], t.state.name, t.value,
                     retry=t.state == TrialState.FAIL and "reason" not in a)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class _Heartbeat:
    def __init__(self, storage: RDBStorage, trial_id: int):
        self.storage, self.trial_id, self.stop = storage, trial_id, threading.Event()
        self.thread = threading.Thread(target=self._beat, daemon=True)

    def _beat(self) -> None:
        while not self.stop.is_set():
            self.storage.record_heartbeat(self.trial_id)
            self.stop.wait(HEARTBEAT_S)

    def __enter__(self) -> "_Heartbeat":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()
