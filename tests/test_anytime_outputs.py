"""Issue 29, the anytime promise in every failure mode: a complete predictions.csv from the moment the test files
are listed (and never a previous run's), readable by other users, for any file name; a watchdog whose final
write cannot be skipped, hidden or hang the process; a budget start, a state folder and a resume identity that
belong to one run only."""

import csv
import errno
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from timebox.cli import main
from timebox.config import OnlineConfig
from timebox.data.layouts import list_images
from timebox.data.synthetic import make_synthetic
from timebox.errors import UsageError
from timebox.fileio import atomic_write_json, atomic_write_text
from timebox.outputs import Outputs
from timebox.predict import LabelMap
from timebox.recovery import RunState

SUBMISSION = str(Path(__file__).resolve().parents[1] / "submission")
LABELS = LabelMap([3, 7], ["cat", "dog"], 1, 32, "efficientnet-lite0")
UNDECODABLE = b"\xff\xfe.jpg"  # a file name from another system: not UTF-8


def _rows(path: Path) -> list[list[str]]:
    with open(path, newline="", encoding="utf-8", errors="surrogateescape") as f:
        return list(csv.reader(f))


def _python(code: str, timeout: float, env: dict | None = None) -> tuple[subprocess.CompletedProcess, float]:
    script = f"import sys; sys.path.insert(0, {SUBMISSION!r})\n" + textwrap.dedent(code)
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=timeout, env=env)
    return proc, time.monotonic() - t0


def _session(out: Path, resume: bool, identity: dict | None = None) -> RunState:
    state = RunState(out / "state")
    state.begin(identity or {"budget_s": 60.0}, resume, time.time())
    return state


# --- 1. a complete CSV from the listing on, never a previous run's ---------------------------------------------

def _online_argv(root: Path, out: Path, tmp_path: Path) -> list[str]:
    return ["online", "--train-dir", str(root / "train"), "--test-dir", str(root / "test"), "--out", str(out),
            "--budget", "60s", "--size", "32", "--cache-dir", str(tmp_path / "cache"), "--workers", "1"]


@pytest.mark.parametrize("error", [MemoryError("out of memory"), OSError(errno.ENOSPC, "No space left on device")],
                         ids=["out of memory", "full disk"])
def test_a_run_that_raises_right_after_listing_leaves_a_complete_csv_and_exits_non_zero(tmp_path, monkeypatch,
                                                                                        error):
    import timebox.online as online

    root = make_synthetic(tmp_path / "data", n_per_class=3, n_test_per_class=2, size=32)
    out = tmp_path / "out"

    def fail(*args, **kwargs):
        raise error

    monkeypatch.setattr(online, "build_extractor", fail)  # the first phase after the listing
    monkeypatch.delenv("TIMEBOX_START", raising=False)
    assert main(_online_argv(root, out, tmp_path)) == 1
    rows = _rows(out / "predictions.csv")
    assert rows[0] == ["filename", "label", "name", "confidence"]
    assert sorted(r[0] for r in rows[1:]) == sorted(p.name for p in (root / "test").iterdir())
    assert {(r[1], r[3]) for r in rows[1:]} == {("0", "0.0")}  # the prior class, unscored


def test_a_run_killed_while_tensorflow_loads_leaves_a_complete_csv(tmp_path):
    """The prior-class CSV is written before TensorFlow loads: here its import never completes (it raises)."""
    root = make_synthetic(tmp_path / "data", n_per_class=3, n_test_per_class=2, size=32)
    out = tmp_path / "out"
    proc, _ = _python(f"""
        class NoTensorFlow:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("tensorflow", "keras"):
                    raise ImportError("TensorFlow is still loading")
        sys.meta_path.insert(0, NoTensorFlow())
        from timebox.cli import main
        main({_online_argv(root, out, tmp_path)!r})
    """, timeout=60, env={k: v for k, v in os.environ.items() if not k.startswith("TIMEBOX_START")})
    assert "TensorFlow is still loading" in proc.stderr
    rows = _rows(out / "predictions.csv")
    assert sorted(r[0] for r in rows[1:]) == sorted(p.name for p in (root / "test").iterdir())
    assert {(r[1], r[3]) for r in rows[1:]} == {("0", "0.0")}


def test_a_new_run_replaces_a_previous_runs_csv_as_soon_as_it_lists_the_test_files(tmp_path, monkeypatch):
    import timebox.online as online

    root = make_synthetic(tmp_path / "data", n_per_class=3, n_test_per_class=2, size=32)
    out = tmp_path / "out"
    out.mkdir()
    (out / "predictions.csv").write_text("filename,label,name,confidence\nold.jpg,0,circle,0.9\n")
    monkeypatch.setattr(online, "build_extractor", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("boom")))
    monkeypatch.delenv("TIMEBOX_START", raising=False)
    assert main(_online_argv(root, out, tmp_path)) == 1
    names = [r[0] for r in _rows(out / "predictions.csv")[1:]]
    assert "old.jpg" not in names and sorted(names) == sorted(p.name for p in (root / "test").iterdir())


def test_resume_does_not_adopt_a_csv_its_own_state_did_not_record(tmp_path):
    out = tmp_path / "out"
    old = _session(out, resume=False)
    Outputs(out, ["old.jpg"], LABELS, old).ensure_exists()  # the previous run's output
    old.close()
    _session(out, resume=False).close()  # a new run, killed before its first write
    resumed = _session(out, resume=True)
    try:
        assert resumed.spent_s > 0
        outputs = Outputs(out, ["new.jpg"], LABELS, resumed)
        assert outputs.written_by is None
        outputs.ensure_exists()
    finally:
        resumed.close()
    assert [r[0] for r in _rows(out / "predictions.csv")[1:]] == ["new.jpg"]


def test_resume_adopts_the_csv_its_own_state_recorded(tmp_path):
    out = tmp_path / "out"
    first = _session(out, resume=False)
    Outputs(out, ["a.jpg"], LABELS, first).write(np.array([[0.2, 0.8]]), np.array([True]), "the early head")
    first.close()
    written = (out / "predictions.csv").read_bytes()
    resumed = _session(out, resume=True)
    try:
        outputs = Outputs(out, ["a.jpg"], LABELS, resumed)
        assert outputs.written_by == "the early head"
        outputs.ensure_exists()
    finally:
        resumed.close()
    assert (out / "predictions.csv").read_bytes() == written


# --- 2. readable by other users ----------------------------------------------------------------------------------

def test_outputs_are_written_with_the_mode_the_umask_allows(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
        state = RunState(tmp_path / "state")
        Outputs(tmp_path, ["a.jpg"], LABELS, state).ensure_exists()
    finally:
        os.umask(old)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "predictions.csv").stat().st_mode & 0o777 == 0o644


# --- 3. any file name --------------------------------------------------------------------------------------------

def test_a_test_file_name_that_is_not_utf8_round_trips_into_the_csv(tmp_path):
    test = tmp_path / "test"
    test.mkdir()
    (test / os.fsdecode(UNDECODABLE)).write_bytes(b"")
    (test / "b.jpg").write_bytes(b"")
    names = [f.relative_to(test.resolve()).as_posix() for f in list_images(test)]
    outputs = Outputs(tmp_path / "out", names, LABELS, RunState(tmp_path / "out" / "state"))
    outputs.ensure_exists()
    assert UNDECODABLE + b",7,dog,0.0\n" in outputs.path.read_bytes()  # the name's own bytes
    assert {os.fsencode(r[0]) for r in _rows(outputs.path)[1:]} == {UNDECODABLE, b"b.jpg"}
    atomic_write_json(tmp_path / "report.json", {"file": os.fsdecode(UNDECODABLE)})  # the reports name them too
    assert UNDECODABLE in (tmp_path / "report.json").read_bytes()


def test_a_watchdog_whose_final_write_fails_on_a_file_name_exits_non_zero(tmp_path):
    proc, wall = _python("""
        import time
        from timebox.watchdog import Watchdog
        def write():  # as every write failed on such a name
            raise UnicodeEncodeError("utf-8", "\\udcff", 0, 1, "surrogates not allowed")
        with Watchdog(time.time() + 0.2, write):
            time.sleep(30)
    """, timeout=20)
    assert proc.returncode == 1, proc.stderr
    assert "UnicodeEncodeError" in proc.stderr and wall < 10


# --- 4. the watchdog ---------------------------------------------------------------------------------------------

def test_watchdog_stack_dump_failing_still_runs_the_final_write(tmp_path):
    marker, stacks = tmp_path / "fired", tmp_path / "a folder"
    stacks.mkdir()  # opening it for the stacks fails
    proc, _ = _python(f"""
        import time
        from pathlib import Path
        from timebox.watchdog import Watchdog
        fire = lambda: Path({str(marker)!r}).write_text("fired")
        with Watchdog(time.time() + 0.2, fire, stacks=Path({str(stacks)!r})):
            time.sleep(30)
    """, timeout=20)
    assert marker.read_text() == "fired", proc.stderr
    assert proc.returncode == 0, proc.stderr


def test_watchdog_final_write_raising_exits_non_zero(tmp_path):
    proc, wall = _python("""
        import time
        from timebox.watchdog import Watchdog
        def write():
            raise OSError(28, "No space left on device")
        with Watchdog(time.time() + 0.2, write):
            time.sleep(30)
    """, timeout=20)
    assert proc.returncode == 1, proc.stderr
    assert "No space left on device" in proc.stderr and wall < 10


def test_watchdog_blocking_final_write_is_ended_by_the_backstop(tmp_path):
    proc, wall = _python("""
        import time
        from timebox.watchdog import Watchdog
        with Watchdog(time.time() + 0.2, lambda: time.sleep(60)):
            time.sleep(60)
    """, timeout=20)
    assert proc.returncode not in (0, None) and wall < 10, proc.stderr


def test_watchdog_ends_a_run_whose_main_thread_holds_the_gil(tmp_path):
    """A C call that never releases the GIL: the watchdog's Python thread cannot run, its backstop still ends the
    process near the deadline."""
    proc, wall = _python("""
        import itertools, time
        from timebox.watchdog import Watchdog
        with Watchdog(time.time() + 0.2, lambda: None):
            sum(itertools.repeat(1, 10 ** 12))
    """, timeout=20)
    assert proc.returncode not in (0, None) and wall < 10, proc.stderr


def test_writes_from_two_threads_never_interleave(tmp_path, monkeypatch):
    import timebox.outputs as outputs_module

    real, events = outputs_module.write_predictions, []

    def slow_write(path, rows):
        events.append("start")
        time.sleep(0.05)
        real(path, rows)
        events.append("end")

    monkeypatch.setattr(outputs_module, "write_predictions", slow_write)
    outputs = Outputs(tmp_path, ["a.jpg"], LABELS, RunState(tmp_path / "state"))
    probs, usable = np.array([[0.9, 0.1]]), np.array([True])
    threads = [threading.Thread(target=outputs.write, args=(probs, usable, f"writer {i}")) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert events == ["start", "end", "start", "end"]


# --- 5. TIMEBOX_START belongs to one process ---------------------------------------------------------------------

_PRINT_START = "from timebox.budget import command_start; print(command_start())"


def test_timebox_start_inherited_by_a_child_process_is_ignored(tmp_path):
    env = {**os.environ, "TIMEBOX_START": repr(time.time() - 1000.0), "TIMEBOX_START_PID": str(os.getpid())}
    proc, _ = _python(_PRINT_START, timeout=20, env=env)
    assert abs(float(proc.stdout) - time.time()) < 60, proc.stderr


def test_timebox_start_set_for_this_process_is_honoured(tmp_path):
    start = time.time() - 1000.0
    script = f"import sys; sys.path.insert(0, {SUBMISSION!r}); {_PRINT_START}"
    proc = subprocess.run(["bash", "-c", 'export TIMEBOX_START_PID=$$; exec "$0" -c "$1"', sys.executable, script],
                          capture_output=True, text=True, timeout=20, env={**os.environ, "TIMEBOX_START": repr(start)})
    assert float(proc.stdout) == pytest.approx(start), proc.stderr


# --- 6. one session at a time in OUT/state -----------------------------------------------------------------------

def test_a_second_session_on_the_same_out_is_refused_while_the_first_still_writes(tmp_path, capsys):
    root = tmp_path / "data"
    out = tmp_path / "out"
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time; sys.path.insert(0, {SUBMISSION!r})
        from timebox.recovery import RunState
        RunState({str(out / 'state')!r}).begin({{}}, False, time.time())
        print("ready", flush=True)
        time.sleep(60)
    """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "ready"
        argv = ["online", "--train-dir", str(root / "train"), "--test-dir", str(root / "test"), "--out", str(out),
                "--budget", "60s", "--resume"]
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert str(out) in err and "another run is still writing it" in err
        assert (out / "state" / "heartbeat-0").exists()  # the first session's state is untouched
    finally:
        holder.kill()
        holder.wait()
    _session(out, resume=False).close()  # once it has ended, the folder is free


# --- 7. resume checks contents, not paths ------------------------------------------------------------------------

def test_resume_refuses_a_test_folder_whose_files_changed(tmp_path):
    root = make_synthetic(tmp_path / "data", n_per_class=2, n_test_per_class=1, size=16)
    cfg = OnlineConfig(root / "train", root / "test", tmp_path / "out", 60.0, resume=True)
    _session(cfg.out, resume=False, identity=cfg.identity()).close()
    _session(cfg.out, resume=True, identity=cfg.identity()).close()  # unchanged: resumes
    (root / "test" / "extra.png").write_bytes((root / "test" / sorted(os.listdir(root / "test"))[0]).read_bytes())
    with pytest.raises(UsageError, match="test_files="):
        _session(cfg.out, resume=True, identity=cfg.identity())
