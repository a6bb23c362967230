"""End to end: `online` on the synthetic dataset with real EfficientNet-Lite0 ImageNet weights (at 64 px
for speed), bad files included, then the saved model predicting again; and inputs that must end in a
clear exit 2 instead of a crash.

One successful run (module-scoped) serves most assertions: it has a zero-byte .jpg and a text file
named .jpg both in a training class folder and in the test folder. It fine-tunes from a deeper cut
as soon as a little of an epoch there fits (instead of 10 or 20 epochs), so its saved model is the deep path's:
usually the whole backbone fine-tuned on random crops.
"""

import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from timebox.cli import main
from timebox.data.synthetic import make_synthetic
from timebox.online import OnlineConfig, run_online
from timebox.outputs import Outputs
from timebox.phases import early as early_phase, finetune as finetune_phase, head as head_phase
from timebox.phases.context import predict_views
from timebox.phases.scoring import Scorer
from timebox.predict import LABELS_FILE, MODEL_FILE, LabelMap, predict_dir
from timebox.score import score

BUDGET_S = 90.0
SIZE = 64
FINETUNE_LR = 5e-4  # not the default, to see the setting reach fine-tuning
BAD_FILES = {"empty.jpg": b"", "notes.jpg": b"these are my notes, not a JPEG\n"}


def _add_bad_files(folder):
    for name, content in BAD_FILES.items():
        (folder / name).write_bytes(content)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One online run on synthetic data with bad files in train/circle/ and test/."""
    root = make_synthetic(tmp_path_factory.mktemp("data"), n_per_class=12, n_test_per_class=4, size=64)
    _add_bad_files(root / "train" / "circle")
    _add_bad_files(root / "test")
    out = tmp_path_factory.mktemp("out")
    cfg = OnlineConfig(root / "train", root / "test", out, BUDGET_S, backbone="efficientnet-lite0",
                       weights="imagenet", size=SIZE, cache_dir=tmp_path_factory.mktemp("cache"), workers=1,
                       finetune_lr=FINETUNE_LR,
                       deep_min_epochs=1e-3,  # any time left: the deep path, on any machine
                       image_min_epochs=1e-3,  # ... as deep as the whole backbone, if any of an epoch fits
                       train_mirror_min_epochs=0)  # ... with the training images' mirrored view
    fine_tune_lrs = []

    def fine_tune(*args, lr, **kwargs):
        fine_tune_lrs.append(lr)
        return real_fine_tune(*args, lr=lr, **kwargs)

    head_scores = []

    def score(self, phase, epoch, step, known=None):  # the head's: what it was scored with, to check after the run
        if phase == "head":
            head_scores.append({"probs": known, "model": self.scored, "weights": self.scored.get_weights(),
                                "val": list(self.acts.val), "test": list(self.acts.test[: self.n_views])})
        return real_score(self, phase, epoch, step, known)

    real_fine_tune, real_score = finetune_phase.fine_tune, Scorer.score
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(finetune_phase, "fine_tune", fine_tune)
        mp.setattr(Scorer, "score", score)
        mp.delenv("TIMEBOX_START", raising=False)  # `./run.sh test` exports it: count from now instead
        start = time.time()
        result = run_online(cfg)
        outer_wall = time.time() - start
    return {"root": root, "out": out, "cfg": cfg, "result": result, "outer_wall": outer_wall,
            "fine_tune_lrs": fine_tune_lrs, "head_scores": head_scores}


def _rows(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.reader(f))


def test_predictions_csv_has_one_row_per_test_file(run):
    rows = _rows(run["out"] / "predictions.csv")
    assert rows[0] == ["filename", "label", "name", "confidence"]
    test_files = sorted(p.name for p in (run["root"] / "test").iterdir())
    assert sorted(r[0] for r in rows[1:]) == test_files
    assert run["result"].test_rows == len(test_files) == len(rows) - 1
    names = ["circle", "square", "stripes", "triangle"]
    for filename, label, name, confidence in rows[1:]:
        assert names[int(label)] == name
        assert 0.0 <= float(confidence) <= 1.0


def test_unreadable_test_files_get_a_row_with_confidence_0(run):
    rows = {r[0]: r for r in _rows(run["out"] / "predictions.csv")[1:]}
    for name in BAD_FILES:
        assert float(rows[name][3]) == 0.0
    # ...and the readable ones were actually predicted
    assert all(float(r[3]) > 0 for n, r in rows.items() if n not in BAD_FILES)
    unreadable = json.loads((run["out"] / "report" / "unreadable_test_files.json").read_text())
    assert sorted(os.path.basename(e["file"]) for e in unreadable) == sorted(BAD_FILES)


def test_report_files_are_written(run):
    report = run["out"] / "report"
    for name in ("config.json", "environment.json", "history.json", "quarantine.json", "summary.json"):
        assert (report / name).is_file(), name
    # the confusion matrix is skipped, with a note, when predicting val would cut into the end reserve (a slow
    # machine, a late refit output): both branches are pinned in test_finalise.py
    late = any("no val confusion matrix" in n for n in run["result"].notes)
    assert (report / "confusion_val.csv").is_file() != late
    summary = json.loads((report / "summary.json").read_text())
    assert summary["budget_s"] == BUDGET_S
    assert summary["val_accuracy"] == pytest.approx(run["result"].val_accuracy)
    config = json.loads((report / "config.json").read_text())
    assert config["backbone"] == "efficientnet-lite0" and config["input_size"] == SIZE
    history = json.loads((report / "history.json").read_text())
    assert history["head"] and 1 <= history["head_chosen_epoch"] <= len(history["head"])
    assert history["checkpoints"], "at least the head is checkpointed"
    if not late:
        confusion = _rows(report / "confusion_val.csv")
        assert confusion[0] == ["true\\predicted", "circle", "square", "stripes", "triangle"]
        assert sum(int(v) for row in confusion[1:] for v in row[1:]) == summary["val_images"]
        if summary["refit"] and summary["val_unseen"]:  # the matrix of the output before the refit: its accuracy
            right = sum(int(row[1 + i]) for i, row in enumerate(confusion[1:]))
            assert right / summary["val_images"] == pytest.approx(summary["val_accuracy"])
    assert summary["val_unseen"] is True  # this run keeps its predecessor's report (or did not refit)


def test_the_report_has_pictures_an_index_page_and_tensorboard_events(run):
    """OUT/report/: the matplotlib pictures, index.html showing them, and TensorBoard event files read back with
    TensorBoard's own reader: per phase val accuracy, loss and learning rate by epoch and by second of the run,
    the summary as text and the confusion matrix as an image."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.util.tensor_util import make_ndarray

    report = run["out"] / "report"
    late = any("no val confusion matrix" in n for n in run["result"].notes)
    pictures = ["timeline.png"] + ([] if late else ["confusion.png", "per_class.png"])
    page = (report / "index.html").read_text()
    for name in pictures:
        assert (report / name).stat().st_size > 1000 and f"<img src='{name}'" in page, name
    assert f"{100 * run['result'].val_accuracy:.2f}%" in page and ("<td>circle</td>" in page) != late
    assert "class weights balanced; cosine head; uniform sampling; lr schedule cosine" in page  # the recipe

    def tags(phase):
        events = EventAccumulator(str(report / "tensorboard" / phase), size_guidance={"tensors": 0}).Reload()
        return events, set(events.Tags()["tensors"])

    head, head_tags = tags("head")
    assert {"val_accuracy", "loss", "learning_rate", "time_left_s", "by_second/val_accuracy"} <= head_tags
    accs = head.Tensors("val_accuracy")
    assert len(accs) >= 2 and all(0 <= float(make_ndarray(e.tensor_proto)) <= 1 for e in accs)
    seconds = [e.step for e in head.Tensors("by_second/val_accuracy")]
    assert seconds == sorted(seconds) and 0 <= seconds[0] <= seconds[-1] <= BUDGET_S
    finetune = [p.name for p in (report / "tensorboard").iterdir() if p.name.startswith("finetune")]
    assert finetune and {"loss", "learning_rate"} <= tags(finetune[0])[1]
    run_events, run_tags = tags("run")
    assert {"summary", "plan"} <= run_tags and ("val confusion matrix" in run_tags) != late
    assert b"fine-tuning efficientnet-lite0" in make_ndarray(run_events.Tensors("plan")[0].tensor_proto).item()
    assert b"val accuracy" in make_ndarray(run_events.Tensors("summary")[0].tensor_proto).item()


def test_bad_training_files_are_quarantined_with_a_reason(run):
    quarantine = json.loads((run["out"] / "report" / "quarantine.json").read_text())
    by_name = {os.path.basename(e["file"]): e["reason"] for e in quarantine}
    assert set(by_name) == set(BAD_FILES)
    assert all(isinstance(reason, str) and reason for reason in by_name.values())
    assert by_name["empty.jpg"] == "zero-byte file"


def test_test_accuracy_on_synthetic_data(run):
    result = score(run["out"] / "predictions.csv", run["root"] / "test_labels.csv")
    assert result.total == 16 and result.missing == 0
    assert result.accuracy >= 0.75, "\n".join(result.lines())


def test_run_finishes_within_its_budget(run):
    assert run["result"].wall_s < BUDGET_S
    assert run["outer_wall"] < BUDGET_S


def test_fine_tuning_goes_deeper_when_its_epochs_fit(run):
    """The cut is chosen after the val images' extraction measured the speed: when the epochs wanted fit at a
    deeper cut, the activations are cached there and fine-tuning trains from there."""
    report = run["out"] / "report"
    extract = next(p for p in json.loads((report / "timeline.json").read_text())["phases"] if p["phase"] == "extract")
    assert extract["cut"] in (11, 8, 5, 3, 0)  # the budget skips block 1 (test_depth)
    where = "the whole backbone, on augmented images" if extract["cut"] == 0 else f"from block {extract['cut']}"
    notes = json.loads((report / "summary.json").read_text())["notes"]
    assert any(n.startswith(f"fine-tuning {where} (default: from block 12)") for n in notes)
    assert json.loads((report / "history.json").read_text())["finetune"]["epochs_run"] >= 1


def test_the_last_fine_tune_round_trains_on_the_val_images_too_and_becomes_the_output(run):
    """The refit (the default): its end is the output, and the val accuracy reported is not of images it saw."""
    report = run["out"] / "report"
    assert json.loads((report / "history.json").read_text())["finetune"]["refit"]
    assert "on the training and val images (refit)" in (report / "log.txt").read_text()
    summary = json.loads((report / "summary.json").read_text())
    assert summary["predictions_from"].endswith("(refit on the training and val images)")
    stated = [n for n in summary["notes"] if "the val accuracy reported, " in n]  # the unseen output's, named
    assert len(stated) == 1 and "is that of the output before it" in stated[0]
    assert float(stated[0].split("the val accuracy reported, ")[1][:6]) == pytest.approx(summary["val_accuracy"],
                                                                                        abs=5e-5)
    assert not any(p["phase"] == "ensemble" for p in json.loads((report / "timeline.json").read_text())["phases"])


def test_fine_tuning_peaks_at_the_configured_learning_rate(run):
    assert run["fine_tune_lrs"] and set(run["fine_tune_lrs"]) == {FINETUNE_LR}  # every round


def test_first_predictions_come_before_any_mirrored_view(run):
    """A head fitted in seconds on the original view writes predictions.csv as soon as every image's original view
    is extracted: before the mirrored views, which take about as long again. Once the val and test images'
    mirrored views are extracted, its predictions average the test images' two views unless val says no; the real
    head comes after."""
    log = (run["out"] / "report" / "log.txt").read_text()
    assert "mirrored views: " in log, "this run extracted the mirrored views"
    early = log.index("(from the early head, val accuracy")
    assert log[early:log.index("\n", early)].endswith(", original view)")
    assert early < log.index("mirrored views: ") < log.index("(from the head, val accuracy")
    phases = json.loads((run["out"] / "report" / "timeline.json").read_text())["phases"]
    names = [p["phase"] for p in phases]
    assert names.index("early output") < names.index("early flip TTA") < names.index("head")
    flip = phases[names.index("early flip TTA")]
    rewritten = "(from the early head, val accuracy " + f"{flip['val_accuracy']:.4f}, flip TTA on)"
    assert (rewritten in log) == flip["tta"]  # on unless val says averaging is clearly worse


def test_the_head_is_scored_from_its_pooled_features_as_the_top_and_head_would(run):
    """Scoring the head (its checkpoint's val accuracy; its output when it is the best yet) takes no second pass
    through the top: its val probabilities, and its test ones when the early output pooled the test views, come
    from the pooled features it was fitted on, and they are what the top and the head give."""
    (head,) = run["head_scores"]
    assert head["probs"] is not None
    val_probs, test_probs = head["probs"]
    head["model"].set_weights(head["weights"])
    assert len(val_probs) == len(head["val"]) == 2  # original and mirrored view
    for probs, view in zip(val_probs, head["val"]):
        np.testing.assert_allclose(probs, predict_views(head["model"], [view]), atol=1e-5)
    if test_probs is not None:
        np.testing.assert_allclose(test_probs, predict_views(head["model"], head["test"]), atol=1e-5)


@pytest.mark.parametrize("head", ["softmax", "cosine"])
def test_without_the_training_images_mirrored_view_the_early_head_is_the_head(tmp_path, monkeypatch, head):
    """When fine-tuning would get fewer than ``TRAIN_MIRROR_MIN_EPOCHS`` epochs with the training images' mirrored
    view, that view is skipped and the early head, fitted on the one view there is, is the head (of either kind:
    the early head is one): one head is fitted, its predictions are not computed again, and fine-tuning trains on
    one view."""
    root = make_synthetic(tmp_path / "data", n_per_class=12, n_test_per_class=4, size=SIZE)
    monkeypatch.delenv("TIMEBOX_START", raising=False)
    fits, views, writes = [], [], []
    real_fit, real_fine_tune, real_write = head_phase.fit_head, finetune_phase.fine_tune, Outputs.write
    real_early = early_phase.fit_early_head
    monkeypatch.setattr(head_phase, "fit_head", lambda *a, **k: fits.append(real_fit(*a, **k)) or fits[-1])
    monkeypatch.setattr(early_phase, "fit_early_head", lambda *a, **k: fits.append(real_early(*a, **k)) or fits[-1])
    monkeypatch.setattr(finetune_phase, "fine_tune", lambda model, v, *a, **k: views.append(len(v)) or
                        real_fine_tune(model, v, *a, **k))
    monkeypatch.setattr(Outputs, "write", lambda self, *a: writes.append(a[-1]) or real_write(self, *a))
    out = tmp_path / "out"
    run_online(OnlineConfig(root / "train", root / "test", out, 90.0, size=SIZE, cache_dir=tmp_path / "cache",
                            workers=1, train_mirror_min_epochs=1e9, head=head,
                            # the default cut: its refit ends well within 90 s on any machine (the whole
                            # backbone's was cut by the deadline once)
                            deep_min_epochs=1e9, image_min_epochs=1e9))
    log = (out / "report" / "log.txt").read_text()
    assert "the training images' mirrored view skipped" in log and ", train skipped" in log
    assert "stands: the head is the early head" in log
    assert len(fits) == 1 and views and set(views) == {1}
    assert type(fits[0].model.get_layer("head_dense")).__name__ == {"softmax": "Dense", "cosine": "CosineDense"}[head]
    assert writes[0] == "the early head" and "head epoch" not in " ".join(writes)
    phases = json.loads((out / "report" / "timeline.json").read_text())["phases"]
    assert next(p for p in phases if p["phase"] == "head")["early_head"] is True
    assert next(p for p in phases if p["phase"] == "extract")["views"] == 1
    summary = json.loads((out / "report" / "summary.json").read_text())
    assert summary["predictions_from"].endswith("(refit on the training and val images)")
    assert score(out / "predictions.csv", root / "test_labels.csv").accuracy >= 0.5


def test_with_no_mirrored_view_at_all_the_early_head_is_the_head(tmp_path, monkeypatch):
    """When no mirrored view fits (fine-tuning is worth more), the early output is still written from the original
    views and its head is the head: no Keras head is fitted (it had no time in the plan)."""
    root = make_synthetic(tmp_path / "data", n_per_class=12, n_test_per_class=4, size=SIZE)
    monkeypatch.delenv("TIMEBOX_START", raising=False)
    fits = []
    real_fit = head_phase.fit_head
    monkeypatch.setattr(head_phase, "fit_head", lambda *a, **k: fits.append(real_fit(*a, **k)) or fits[-1])
    out = tmp_path / "out"
    run_online(OnlineConfig(root / "train", root / "test", out, 90.0, size=SIZE, cache_dir=tmp_path / "cache",
                            workers=1, min_ft_epochs=1e9, deep_min_epochs=1e9, image_min_epochs=1e9))
    summary = json.loads((out / "report" / "summary.json").read_text())
    assert "mirrored views skipped: the time is worth more to fine-tuning" in summary["notes"]
    assert "stands: the head is the early head" in (out / "report" / "log.txt").read_text()
    assert not fits
    phases = json.loads((out / "report" / "timeline.json").read_text())["phases"]
    assert "early output" in [p["phase"] for p in phases]
    assert next(p for p in phases if p["phase"] == "head")["early_head"] is True
    assert score(out / "predictions.csv", root / "test_labels.csv").accuracy >= 0.5


def test_saved_model_folder_reproduces_the_predictions(run, tmp_path):
    """model/ (model.keras + labels.json) reloads and predicts the same labels (flip TTA aside)."""
    model_dir = run["result"].model_dir
    assert (model_dir / MODEL_FILE).is_file() and (model_dir / LABELS_FILE).is_file()
    labels = LabelMap.load(model_dir / LABELS_FILE)
    assert labels.input_size == SIZE and labels.class_names == ["circle", "square", "stripes", "triangle"]
    out_csv = tmp_path / "again.csv"
    n = predict_dir(model_dir, run["root"] / "test", out_csv, run["cfg"].cache_dir)
    first = {r[0]: r for r in _rows(run["out"] / "predictions.csv")[1:]}
    again = {r[0]: r for r in _rows(out_csv)[1:]}
    assert n == len(first) and set(again) == set(first)
    same = sum(first[k][1] == again[k][1] for k in first)
    assert same >= 0.9 * len(first), f"{same}/{len(first)} labels agree"
    for name in BAD_FILES:  # unreadable files fall back to the same prior class, confidence 0
        assert again[name][1:] == first[name][1:]


def test_saved_model_loads_in_a_fresh_process(run):
    """load_model in a new interpreter that imported nothing else of timebox (as an export or a
    judge's loader does): the custom loss and layers it needs must register themselves."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "submission")}
    code = ("import sys; from timebox.models.registry import load_model; "
            "m = load_model(sys.argv[1]); assert 'timebox.online' not in sys.modules; print(m.output_shape)")
    done = subprocess.run([sys.executable, "-c", code, str(run["result"].model_dir / MODEL_FILE)], env=env,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("(None, 4)")


def test_the_console_shows_timebox_lines_only_unless_verbose(run, tmp_path):
    """`run.sh predict` loads TensorFlow and predicts: by default its console holds the one line timebox writes
    (TensorFlow's start-up chatter held back, timebox.console); --verbose brings TensorFlow's lines back."""
    run_sh = Path(__file__).resolve().parents[1] / "run.sh"
    argv = [str(run_sh), "predict", "--model", str(run["result"].model_dir), "--images", str(run["root"] / "test"),
            "--out", str(tmp_path / "p.csv"), "--cache-dir", str(tmp_path / "cache")]
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "TIMEBOX_VERBOSE")}
    quiet = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=300)
    assert quiet.returncode == 0, quiet.stderr
    assert (quiet.stdout + quiet.stderr).splitlines() == [f"predictions: {tmp_path / 'p.csv'} (18 rows)"]
    loud = subprocess.run([*argv, "--verbose"], capture_output=True, text=True, env=env, timeout=300)
    assert loud.returncode == 0 and any(not line.startswith("predictions:") for line in loud.stderr.splitlines())


# --- inputs that must end in exit 2 ------------------------------------------------------------------


def _online_argv(train, test, out, budget="60s"):
    return ["online", "--train-dir", str(train), "--test-dir", str(test), "--out", str(out),
            "--budget", budget, "--size", str(SIZE)]


def test_empty_train_dir_returns_2_naming_it(tmp_path, capsys):
    train, test = tmp_path / "empty_train", tmp_path / "test"
    train.mkdir()
    test.mkdir()
    (test / "a.jpg").write_bytes(b"")
    assert main(_online_argv(train, test, tmp_path / "out")) == 2
    err = capsys.readouterr().err
    assert "empty_train" in err and "Traceback" not in err


def test_empty_test_dir_returns_2_naming_it(run, tmp_path, capsys):
    test = tmp_path / "empty_test"
    test.mkdir()
    assert main(_online_argv(run["root"] / "train", test, tmp_path / "out")) == 2
    err = capsys.readouterr().err
    assert "empty_test" in err and "Traceback" not in err


def test_class_with_only_unreadable_images_returns_2_naming_it(tmp_path, capsys):
    root = make_synthetic(tmp_path / "data", n_per_class=3, n_test_per_class=1, size=32,
                          classes=("circle", "square"))
    for f in (root / "train" / "square").iterdir():
        f.write_bytes(b"")
    argv = _online_argv(root / "train", root / "test", tmp_path / "out") + ["--cache-dir", str(tmp_path / "c"),
                                                                           "--workers", "1"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "square" in err and "Traceback" not in err


def test_a_fitted_head_scoring_below_the_early_head_on_val_does_not_replace_it(tmp_path, monkeypatch):
    """The early output is replaced only by a better model: a Keras head that scores lower on val than the early
    head (here made so by flipping its class directions; in real runs a head squeezed to one epoch by a loaded
    machine, 0.16 against 0.81) leaves the early head as the head, and its output stands."""
    root = make_synthetic(tmp_path / "data", n_per_class=12, n_test_per_class=4, size=SIZE)
    monkeypatch.delenv("TIMEBOX_START", raising=False)
    writes, real_fit, real_write = [], head_phase.fit_head, Outputs.write

    def worse_head(*args, **kwargs):
        head = real_fit(*args, **kwargs)
        dense = head.model.get_layer("head_dense")
        dense.set_weights([-w if i == 0 else w for i, w in enumerate(dense.get_weights())])
        return head

    monkeypatch.setattr(head_phase, "fit_head", worse_head)
    monkeypatch.setattr(Outputs, "write", lambda self, *a: writes.append(a[-1]) or real_write(self, *a))
    out = tmp_path / "out"
    run_online(OnlineConfig(root / "train", root / "test", out, 90.0, size=SIZE, cache_dir=tmp_path / "cache",
                            workers=1, train_mirror_min_epochs=0, deep_min_epochs=1e9, image_min_epochs=1e9))
    log = (out / "report" / "log.txt").read_text()
    assert ", train skipped" not in log  # a Keras head was fitted, on both training views
    assert "head (the early head)" in log and "stands: the head is the early head" in log
    assert writes[0] == "the early head" and not any(w.startswith("head epoch") for w in writes)
    notes = json.loads((out / "report" / "summary.json").read_text())["notes"]
    assert any(n.startswith("the head is the early head (val accuracy") for n in notes)
