"""The command line: durations, exit codes (2 for bad usage/input, with the culprit named), `score`,
and `./run.sh --help`."""

import subprocess
from pathlib import Path

import pytest

from timebox.budget import Budget, command_start, parse_duration
from timebox.cli import main
from timebox.errors import UsageError
from timebox.score import score

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("text, seconds", [
    ("90s", 90), ("10m", 600), ("3h", 10800), ("1h30m", 5400), ("1.5h", 5400), ("90", 90),
    (" 2M ", 120), ("1h0m30s", 3630), ("0.5", 0.5),
])
def test_parse_duration(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["5x", "", "0s", "0", "h", "10m5", "-5s", "1h 30m", "m10"])
def test_parse_duration_rejects(text):
    with pytest.raises(UsageError):
        parse_duration(text)


def test_budget_counts_from_timebox_start(monkeypatch):
    """run.sh exports TIMEBOX_START; the deadline counts from it, not from when Budget is built."""
    import time

    monkeypatch.setenv("TIMEBOX_START", str(time.time() - 50))
    budget = Budget(60)
    assert 49 <= budget.elapsed() <= 52
    assert 8 <= budget.remaining() <= 11
    assert not budget.expired() and budget.expired(reserve_s=20)


def test_command_start_ignores_a_bad_timebox_start(monkeypatch):
    import time

    monkeypatch.setenv("TIMEBOX_START", "yesterday")
    assert abs(command_start() - time.time()) < 5


def _online_args(tmp_path, budget="60s", train=None):
    test = tmp_path / "test"
    test.mkdir(exist_ok=True)
    return ["online", "--train-dir", str(train or tmp_path / "train"), "--test-dir", str(test),
            "--out", str(tmp_path / "out"), "--budget", budget]


def test_online_with_a_bad_budget_exits_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(_online_args(tmp_path, budget="5x"))
    assert exc.value.code == 2
    assert "5x" in capsys.readouterr().err


def test_online_with_a_missing_train_dir_returns_2_naming_it(tmp_path, capsys):
    missing = tmp_path / "no_such_train_dir"
    assert main(_online_args(tmp_path, train=missing)) == 2
    err = capsys.readouterr().err
    assert "no_such_train_dir" in err
    assert "Traceback" not in err


def test_unknown_subcommand_exits_2(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["train-forever"])
    assert exc.value.code == 2


# --- score ----------------------------------------------------------------------------------------


def _write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def labels_csv(tmp_path):
    return _write(tmp_path / "labels.csv", "filename,label\na.jpg,0\nb.jpg,0\nc.jpg,1\nd.jpg,1\ne.jpg,2\n")


def test_score_accuracy_per_class_and_missing_rows(tmp_path, labels_csv):
    """Missing prediction rows count as wrong; extra rows (not labelled) are ignored."""
    pred = _write(tmp_path / "pred.csv",
                  "filename,label,name,confidence\na.jpg,0,x,0.9\nb.jpg,1,y,0.8\nc.jpg,1,y,0.7\n"
                  "zzz.jpg,2,z,0.5\n")  # d.jpg and e.jpg missing
    result = score(pred, labels_csv)
    assert (result.correct, result.total, result.missing) == (2, 5, 2)
    assert result.accuracy == pytest.approx(0.4)
    assert result.per_class == {"0": (1, 2), "1": (1, 2), "2": (0, 1)}
    lines = result.lines()
    assert lines[0] == "accuracy: 40.00% (2/5); macro accuracy (the mean of the classes'): 33.33%"
    assert "missing predictions: 2 (counted wrong)" in lines
    assert "  class 0: 50.00% (1/2)" in lines


def test_score_all_correct_with_bom_and_whitespace(tmp_path, labels_csv):
    pred = _write(tmp_path / "pred.csv", "\ufefffilename,label\n a.jpg ,0\nb.jpg,0\nc.jpg, 1\nd.jpg,1\ne.jpg,2\n")
    result = score(pred, labels_csv)
    assert result.accuracy == 1.0 and result.missing == 0


def test_score_cli_prints_accuracy(tmp_path, labels_csv, capsys):
    pred = _write(tmp_path / "pred.csv", "filename,label\na.jpg,0\nb.jpg,0\nc.jpg,1\nd.jpg,0\ne.jpg,2\n")
    assert main(["score", "--pred", str(pred), "--labels", str(labels_csv)]) == 0
    assert "accuracy: 80.00% (4/5)" in capsys.readouterr().out


def test_score_labels_without_header_returns_2(tmp_path, capsys):
    pred = _write(tmp_path / "pred.csv", "filename,label\na.jpg,0\n")
    labels = _write(tmp_path / "noheader.csv", "a.jpg,0\nb.jpg,1\n")
    assert main(["score", "--pred", str(pred), "--labels", str(labels)]) == 2
    err = capsys.readouterr().err
    assert "noheader.csv" in err and "header" in err


def test_score_missing_file_returns_2(tmp_path, labels_csv, capsys):
    assert main(["score", "--pred", str(tmp_path / "absent.csv"), "--labels", str(labels_csv)]) == 2
    assert "absent.csv" in capsys.readouterr().err


def test_score_empty_labels_returns_2(tmp_path, capsys):
    pred = _write(tmp_path / "pred.csv", "filename,label\na.jpg,0\n")
    labels = _write(tmp_path / "empty.csv", "filename,label\n")
    assert main(["score", "--pred", str(pred), "--labels", str(labels)]) == 2
    assert "empty.csv" in capsys.readouterr().err


def test_predict_with_a_non_model_folder_returns_2(tmp_path, capsys):
    (tmp_path / "imgs").mkdir()
    code = main(["predict", "--model", str(tmp_path), "--images", str(tmp_path / "imgs"),
                 "--out", str(tmp_path / "p.csv"), "--cache-dir", str(tmp_path / "cache")])
    assert code == 2
    assert "not a timebox model folder" in capsys.readouterr().err


# --- run.sh ---------------------------------------------------------------------------------------


def test_run_sh_help_lists_the_subcommands():
    proc = subprocess.run([str(ROOT / "run.sh"), "--help"], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    for command in ("online", "demo", "predict", "score", "fetch-weights"):
        assert command in proc.stdout


def test_score_reads_a_gbk_labels_file_with_chinese_class_names(tmp_path, capsys):
    """Chinese tools save CSVs as GBK: scoring one is not a crash (it used to be a UnicodeDecodeError, exit 1)."""
    labels = tmp_path / "labels.csv"
    labels.write_bytes("filename,label\na.jpg,可回收物\nb.jpg,其他垃圾\n".encode("gbk"))
    pred = tmp_path / "pred.csv"
    pred.write_text("filename,label\na.jpg,可回收物\nb.jpg,可回收物\n", encoding="utf-8")
    assert main(["score", "--pred", str(pred), "--labels", str(labels)]) == 0
    assert "accuracy: 50.00% (1/2)" in capsys.readouterr().out


def test_every_subcommand_prints_its_help_with_every_setting_flag():
    """argparse %-formats help texts: a setting's help with "2% of" once made `online --help` raise."""
    from timebox.cli import build_parser
    from timebox.settings import SETTINGS

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for name, command in sub.choices.items():
        text = command.format_help()
        assert text.startswith("usage:"), name
    online = " ".join(sub.choices["online"].format_help().split())
    assert all(s.flag in online for s in SETTINGS if s.flag) and "2% of the budget" in online
