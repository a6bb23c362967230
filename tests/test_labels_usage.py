"""Issue 29, labels and bad usage: integer-valued labels are contest ids in every layout and in `score`, a label
file mixing ids and names is refused naming its line, `--out` naming a file is a usage error, and a training
set with a single class is refused."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from timebox.cli import main
from timebox.data.layouts import read_dataset
from timebox.errors import UsageError
from timebox.score import score

SUBMISSION = str(Path(__file__).resolve().parents[1] / "submission")


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    return path


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def csv_dataset(root: Path, rows: list[tuple[str, str]]) -> Path:
    for name, _ in rows:
        touch(root / name)
    write(root / "labels.csv", "filename,label\n" + "".join(f"{n},{label}\n" for n, label in rows))
    return root


# --- scenario 1: integer-valued labels are ids ---------------------------------------------------


def test_csv_label_like_1_0_is_an_id_not_a_name(tmp_path):
    ds = read_dataset(csv_dataset(tmp_path, [("a.jpg", "0"), ("b.jpg", "1.0"), ("c.jpg", "10"), ("d.jpg", "2")]))
    assert ds.class_ids == [0, 1, 2, 10]
    assert [ds.class_ids[i] for i in ds.labels] == [0, 1, 10, 2]


def test_csv_all_float_labels_are_ids_named_by_class_index(tmp_path):
    root = csv_dataset(tmp_path, [("a.jpg", "3.0"), ("b.jpg", "5.0")])
    write(root / "class_index.txt", "rose 3\ndaisy 5\n")
    ds = read_dataset(root)
    assert ds.class_ids == [3, 5] and ds.class_names == ["rose", "daisy"] and ds.labels.tolist() == [0, 1]


def test_csv_mixing_ids_and_names_is_refused_naming_the_line(tmp_path):
    root = csv_dataset(tmp_path, [("a.jpg", "0"), ("b.jpg", "1"), ("c.jpg", "tulip")])
    with pytest.raises(UsageError, match=r"labels\.csv:4: .*'tulip'.*ids and names"):
        read_dataset(root)


def test_modelarts_label_like_1_0_is_an_id(tmp_path):
    for i, label in enumerate(["0", "1.0"], start=1):
        touch(tmp_path / f"img_{i}.jpg")
        write(tmp_path / f"img_{i}.txt", f"img_{i}.jpg, {label}")
    ds = read_dataset(tmp_path)
    assert ds.class_ids == [0, 1] and ds.labels.tolist() == [0, 1]


def test_integer_class_folders_without_class_index_map_to_their_integers(tmp_path):
    for name in map(str, range(12)):
        touch(tmp_path / "train" / name / "x.jpg")
    ds = read_dataset(tmp_path / "train")
    assert ds.class_ids == list(range(12)) and ds.class_names == [str(i) for i in range(12)]
    by_folder = {f.parent.name: ds.class_ids[label] for f, label in zip(ds.files, ds.labels)}
    assert by_folder["10"] == 10 and by_folder["2"] == 2


def test_class_folders_mixing_ids_and_names_are_refused(tmp_path):
    for name in ("0", "1", "cat"):
        touch(tmp_path / "train" / name / "x.jpg")
    with pytest.raises(UsageError, match=r"'cat'.*class_index\.txt"):
        read_dataset(tmp_path / "train")


def test_class_folders_with_the_same_id_are_refused(tmp_path):
    for name in ("1", "01", "2"):
        touch(tmp_path / "train" / name / "x.jpg")
    with pytest.raises(UsageError, match=r"id 1"):
        read_dataset(tmp_path / "train")


def test_score_label_like_1_0_matches_the_predicted_id(tmp_path):
    truth = write(tmp_path / "truth.csv", "filename,label\na.jpg,0.0\nb.jpg,1.0\nc.jpg,10\n")
    pred = write(tmp_path / "pred.csv", "filename,label\na.jpg,0\nb.jpg,1\nc.jpg,10\n")
    result = score(pred, truth)
    assert result.accuracy == 1.0 and set(result.per_class) == {"0", "1", "10"}


def test_score_labels_mixing_ids_and_names_are_refused_naming_the_line(tmp_path, capsys):
    truth = write(tmp_path / "truth.csv", "filename,label\na.jpg,0\nb.jpg,rose\n")
    pred = write(tmp_path / "pred.csv", "filename,label\na.jpg,0\nb.jpg,1\n")
    assert main(["score", "--pred", str(pred), "--labels", str(truth)]) == 2
    assert "truth.csv:3" in capsys.readouterr().err


# --- scenario 2: --out naming a file ---------------------------------------------------------------


def _run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": SUBMISSION}
    env.pop("TIMEBOX_START", None)
    return subprocess.run([sys.executable, "-m", "timebox", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120)


@pytest.mark.parametrize("below", ["", "sub"])
def test_out_naming_an_existing_file_exits_2_naming_it(tmp_path, below):
    for name in ("a", "b"):
        touch(tmp_path / "train" / name / "x.jpg")
    touch(tmp_path / "test" / "t.jpg")
    taken = write(tmp_path / "taken.txt", "not a folder")
    out = taken / below if below else taken
    proc = _run_cli("online", "--train-dir", str(tmp_path / "train"), "--test-dir", str(tmp_path / "test"),
                    "--out", str(out), "--budget", "60s", "--cache-dir", str(tmp_path / "cache"), cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert str(taken) in proc.stderr and "Traceback" not in proc.stderr
    assert taken.read_text() == "not a folder" and not (tmp_path / "cache").exists()


def test_demo_out_naming_an_existing_file_returns_2_before_generating_data(tmp_path, capsys):
    taken = write(tmp_path / "taken", "x")
    assert main(["demo", "--out", str(taken), "--budget", "60s"]) == 2
    assert str(taken) in capsys.readouterr().err


def test_predict_out_naming_a_folder_returns_2_before_loading_the_model(tmp_path, capsys):
    (tmp_path / "imgs").mkdir()
    (tmp_path / "p_dir").mkdir()
    code = main(["predict", "--model", str(tmp_path), "--images", str(tmp_path / "imgs"),
                 "--out", str(tmp_path / "p_dir"), "--cache-dir", str(tmp_path / "cache")])
    err = capsys.readouterr().err
    assert code == 2 and "p_dir is a folder" in err


# --- scenario 3: a single class -------------------------------------------------------------------


def test_single_class_training_folder_is_refused_naming_it(tmp_path):
    for i in range(3):
        touch(tmp_path / "train" / "only" / f"{i}.jpg")
    with pytest.raises(UsageError, match=rf"{tmp_path / 'train'}.*one class.*at least two"):
        read_dataset(tmp_path / "train")


def test_single_class_csv_is_refused(tmp_path):
    root = csv_dataset(tmp_path / "train", [("a.jpg", "3"), ("b.jpg", "3")])
    with pytest.raises(UsageError, match="one class.*at least two"):
        read_dataset(root)
