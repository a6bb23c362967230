"""Watchdog: fires on_fire() then exits the process with code 0 (1 if on_fire raised) at its deadline even while
the main thread is blocked, leaving every thread's stack where asked; once its `with` block is left it never
fires."""

import subprocess
import sys
import textwrap
import time
from pathlib import Path

SUBMISSION = str(Path(__file__).resolve().parents[1] / "submission")


def _run(code: str, timeout: float):
    script = f"import sys; sys.path.insert(0, {SUBMISSION!r})\n" + textwrap.dedent(code)
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=timeout)
    return proc, time.monotonic() - t0


def test_watchdog_fires_while_main_thread_sleeps_and_exits_0(tmp_path):
    marker = tmp_path / "fired"
    proc, wall = _run(f"""
        import time
        from pathlib import Path
        from timebox.watchdog import Watchdog
        with Watchdog(time.time() + 0.5, lambda: Path({str(marker)!r}).write_text("fired")):
            time.sleep(30)
        print("main thread finished")
        sys.exit(3)
    """, timeout=20)
    assert proc.returncode == 0, proc.stderr
    assert wall < 5.0
    assert marker.read_text() == "fired"
    assert "main thread finished" not in proc.stdout
    assert "watchdog" in proc.stderr


def test_watchdog_writes_where_every_thread_was_when_it_fired(tmp_path):
    stacks = tmp_path / "stacks.txt"
    proc, _ = _run(f"""
        import time
        from pathlib import Path
        from timebox.watchdog import Watchdog
        def stalled_step():
            time.sleep(30)
        with Watchdog(time.time() + 0.3, lambda: None, stacks=Path({str(stacks)!r})):
            stalled_step()
    """, timeout=20)
    assert proc.returncode == 0, proc.stderr
    assert "stalled_step" in stacks.read_text()  # the main thread's frame at the deadline
    assert str(stacks) in proc.stderr


def test_watchdog_exits_1_if_on_fire_raises(tmp_path):
    """A final write that failed must not read as success (issue 29)."""
    proc, wall = _run("""
        import time
        from timebox.watchdog import Watchdog
        def boom():
            raise RuntimeError("on_fire failed")
        with Watchdog(time.time() + 0.3, boom):
            time.sleep(30)
    """, timeout=20)
    assert proc.returncode == 1, proc.stderr
    assert "on_fire failed" in proc.stderr
    assert wall < 5.0


def test_watchdog_left_before_its_deadline_never_fires(tmp_path):
    marker = tmp_path / "fired"
    proc, wall = _run(f"""
        import time
        from pathlib import Path
        from timebox.watchdog import Watchdog
        with Watchdog(time.time() + 0.5, lambda: Path({str(marker)!r}).write_text("fired")):
            time.sleep(0.05)
        time.sleep(1.5)  # well past the fire time
        print("normal return")
        sys.exit(7)
    """, timeout=20)
    assert proc.returncode == 7, proc.stderr
    assert "normal return" in proc.stdout
    assert not marker.exists()
    assert "watchdog" not in proc.stderr


def test_watchdog_with_a_deadline_in_the_past_fires_at_once(tmp_path):
    marker = tmp_path / "fired"
    proc, wall = _run(f"""
        import time
        from pathlib import Path
        from timebox.watchdog import Watchdog
        with Watchdog(time.time() - 10, lambda: Path({str(marker)!r}).write_text("fired")):
            time.sleep(30)
    """, timeout=20)
    assert proc.returncode == 0, proc.stderr
    assert wall < 5.0
    assert marker.exists()
