"""`online --judge flink|modelarts`: the run writes the judge's export beside OUT/model (flink: from
IMAGE_TRAIN_INPUT_PATH with no test folder, a SavedModel whose input is input_1; modelarts: the
model/ folder whose metric.json holds the run's val accuracy)."""

import json

import pytest
import tensorflow as tf

from timebox.cli import main
from timebox.data.synthetic import make_synthetic


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_synthetic(tmp_path_factory.mktemp("data"), n_per_class=12, n_test_per_class=2, size=64)


def _online(argv, monkeypatch):
    monkeypatch.delenv("TIMEBOX_START", raising=False)
    return main(["online", "--budget", "60s", "--size", "64", "--workers", "1", *argv])


def test_flink_reads_image_train_input_path_and_writes_a_saved_model_named_input_1(data, tmp_path, monkeypatch):
    monkeypatch.setenv("IMAGE_TRAIN_INPUT_PATH", str(data / "train"))
    monkeypatch.setenv("MODEL_INFERENCE_PATH", str(tmp_path / "inference"))
    out = tmp_path / "out"
    assert _online(["--out", str(out), "--judge", "flink", "--cache-dir", str(tmp_path / "cache")], monkeypatch) == 0
    loaded = tf.saved_model.load(str(tmp_path / "inference" / "SavedModel"))
    inputs = loaded.signatures["serving_default"].structured_input_signature[1]
    assert list(inputs) == ["input_1"]
    assert (out / "predictions.csv").read_text().splitlines() == ["filename,label,name,confidence"]  # no test folder
    summary = json.loads((out / "report" / "summary.json").read_text())
    assert summary["wall_s"] <= 60.0


def test_modelarts_export_holds_the_runs_val_accuracy(data, tmp_path, monkeypatch):
    out = tmp_path / "out"
    argv = ["--train-dir", str(data / "train"), "--test-dir", str(data / "test"), "--out", str(out),
            "--judge", "modelarts", "--cache-dir", str(tmp_path / "cache")]
    assert _online(argv, monkeypatch) == 0
    folder = out / "modelarts" / "model"
    for name in ("saved_model.pb", "config.json", "customize_service.py", "garbage_classify_rule.json"):
        assert (folder / name).is_file(), name
    summary = json.loads((out / "report" / "summary.json").read_text())
    assert json.loads((folder / "metric.json").read_text())["accuracy"] == pytest.approx(summary["val_accuracy"])


def test_online_without_train_dir_or_its_variable_is_a_usage_error(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("IMAGE_TRAIN_INPUT_PATH", raising=False)
    assert main(["online", "--budget", "60s", "--out", str(tmp_path / "out")]) == 2
    assert "IMAGE_TRAIN_INPUT_PATH" in capsys.readouterr().err
