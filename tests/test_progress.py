"""Progress: plain event lines everywhere (stderr and the log file); the single updating status line
(phase, progress, best val accuracy, ETA) only on a terminal, cleared before the next event line."""

import io

from timebox.budget import Budget
from timebox.progress import Progress


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_events_are_plain_lines_on_the_stream_and_in_the_log_file(tmp_path):
    stream = io.StringIO()
    log = Progress(Budget(60.0), stream=stream, log_file=tmp_path / "report" / "log.txt")
    log("extracting features")
    log.status("extract", 10, 100)  # not a terminal: no status line
    log("head trained")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2 and lines[0].endswith("] extracting features") and lines[0].startswith("[")
    assert "left]" in lines[0]
    assert "\r" not in stream.getvalue()
    assert (tmp_path / "report" / "log.txt").read_text().splitlines() == lines
    assert [e["message"] for e in log.events] == ["extracting features", "head trained"]


def test_status_line_is_redrawn_in_place_on_a_terminal_and_cleared_by_events():
    term = _Terminal()
    log = Progress(Budget(60.0), stream=term)
    log.status("finetune", 1, 10, best=0.81)
    log.status("finetune", 2, 10)
    log("fine-tune done")
    out = term.getvalue()
    assert out.count("\r\x1b[K") == 3  # two redraws, one clear before the event line
    assert "finetune 2/10 | best val 0.8100 | ETA" in out  # the best value is remembered
    assert out.endswith("] fine-tune done\n")


def test_a_resumed_run_appends_to_the_log_file(tmp_path):
    path = tmp_path / "log.txt"
    Progress(Budget(60.0), stream=io.StringIO(), log_file=path)("first session")
    Progress(Budget(60.0), stream=io.StringIO(), log_file=path, resumed=True)("second session")
    assert [line.split("] ")[1] for line in path.read_text().splitlines()] == ["first session", "second session"]
