"""`python -m timebox online` as a real process: SIGTERM after the first predictions ends it cleanly
(exit 0, complete predictions, summary says interrupted), and a budget that ends during training
still leaves complete predictions within the budget.

These start TensorFlow in a subprocess and take about a minute each.
"""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from timebox.data.synthetic import make_synthetic

SUBMISSION = str(Path(__file__).resolve().parents[1] / "submission")


def _env(tmp_path, timebox_start=None):
    env = {k: v for k, v in os.environ.items() if k != "TIMEBOX_START"}
    env.update(PYTHONPATH=SUBMISSION, TF_CPP_MIN_LOG_LEVEL="2", TIMEBOX_CACHE_DIR=str(tmp_path / "cache"))
    if timebox_start is not None:
        env["TIMEBOX_START"] = repr(timebox_start)
    return env


def _argv(root, out, budget, size=64):
    return [sys.executable, "-m", "timebox", "online", "--train-dir", str(root / "train"),
            "--test-dir", str(root / "test"), "--out", str(out), "--budget", budget, "--size", str(size),
            "--workers", "1"]


def _assert_complete_predictions(out, root):
    with open(out / "predictions.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["filename", "label", "name", "confidence"]
    assert sorted(r[0] for r in rows[1:]) == sorted(p.name for p in (root / "test").iterdir())
    names = ["circle", "square", "stripes", "triangle"]
    for _, label, name, confidence in rows[1:]:
        assert names[int(label)] == name
        assert 0.0 <= float(confidence) <= 1.0


def _sigterm_after_call(monkeypatch, module, name: str, n: int) -> list:
    """``module.name`` patched to send this process SIGTERM (run_online's handler: budget.interrupt()) right after
    its ``n``-th call returns; the list returned collects every call's result."""
    real, results = getattr(module, name), []

    def call_then_sigterm(*args, **kwargs):
        results.append(real(*args, **kwargs))
        if len(results) == n:
            os.kill(os.getpid(), signal.SIGTERM)
        return results[-1]

    monkeypatch.setattr(module, name, call_then_sigterm)
    return results


def _kill(proc):
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def test_sigterm_after_first_predictions_exits_0_with_complete_outputs(tmp_path):
    root = make_synthetic(tmp_path / "data", n_per_class=24, n_test_per_class=4, size=64)
    out = tmp_path / "out"
    log = open(tmp_path / "log.txt", "w+")
    proc = subprocess.Popen(_argv(root, out, "10m"), env=_env(tmp_path), stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline, log_txt = time.monotonic() + 120, out / "report" / "log.txt"
        while not (log_txt.exists() and "(from the early head" in log_txt.read_text()):  # a model's, not the prior
            assert proc.poll() is None, f"exited {proc.returncode} before a model's predictions were written"
            assert time.monotonic() < deadline, "no model's predictions within 120 s"
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        t_sig = time.monotonic()
        try:
            rc = proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pytest.fail("the process did not exit within 30 s of SIGTERM")
        after_sig = time.monotonic() - t_sig
    finally:
        _kill(proc)
        log.seek(0)
        output = log.read()
        log.close()
    assert rc == 0, output
    assert after_sig < 30
    _assert_complete_predictions(out, root)
    summary = json.loads((out / "report" / "summary.json").read_text())
    assert summary["interrupted"] is True, summary
    assert summary["predictions_from"] not in (None, "prior")
    assert summary["budget_s"] == 600.0
    assert summary["wall_s"] < 150.0, "SIGTERM should end the run long before its budget"
    assert (out / "model").is_dir()


def test_budget_ending_during_training_leaves_complete_predictions_within_budget(tmp_path):
    # 480 training images: on a fast machine 100 fine-tune epochs of 240 fitted in the time left
    root = make_synthetic(tmp_path / "data", n_per_class=120, n_test_per_class=10, size=64)
    out = tmp_path / "out"
    budget_s = 45.0
    start = time.time()  # as run.sh does: TIMEBOX_START is the command's start
    t0 = time.monotonic()
    proc = subprocess.run(_argv(root, out, "45s"), env=_env(tmp_path, timebox_start=start),
                          capture_output=True, text=True, timeout=budget_s + 60)
    wall = time.monotonic() - t0
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert wall <= budget_s + 3.0, f"{wall:.1f}s"
    _assert_complete_predictions(out, root)
    summary = json.loads((out / "report" / "summary.json").read_text())
    assert summary["interrupted"] is False
    assert summary["predictions_from"] not in (None, "prior")
    assert summary["wall_s"] <= budget_s and summary["margin_s"] >= 0
    finetune = json.loads((out / "report" / "history.json").read_text())["finetune"]
    assert finetune["epochs_run"] < 100  # the budget, not max_epochs, ended training
    assert "watchdog" not in proc.stderr


def _small_run(online, root, tmp_path, monkeypatch) -> tuple:
    """A 120 s ``run_online`` on ``root`` at 64 px, in this process (a SIGTERM it sends itself reaches
    run_online's handler); its OUT and report summary."""
    monkeypatch.delenv("TIMEBOX_START", raising=False)
    out = tmp_path / "out"
    online.run_online(online.OnlineConfig(root / "train", root / "test", out, 120.0, size=64,
                                          cache_dir=tmp_path / "cache", workers=1))
    return out, json.loads((out / "report" / "summary.json").read_text())


@pytest.mark.parametrize("head", ["fit_early_head", "fit_head"], ids=["early head", "real head"])
def test_sigterm_after_a_head_is_fitted_keeps_that_heads_predictions(tmp_path, monkeypatch, head):
    """SIGTERM right after the early head (fitted before the training images' mirrored view) or the real head:
    the run ends with that head as the output and the exported model, and no head is fitted in the time left
    after it (the early head's output is not computed again)."""
    import timebox.online as online
    from timebox.phases import early as early_phase, head as head_phase
    from timebox.score import score

    root = make_synthetic(tmp_path / "data", n_per_class=12, n_test_per_class=4, size=64)
    early = _sigterm_after_call(monkeypatch, early_phase, "fit_early_head", 1 if head == "fit_early_head" else 0)
    real = _sigterm_after_call(monkeypatch, head_phase, "fit_head", 1 if head == "fit_head" else 0)
    out, summary = _small_run(online, root, tmp_path, monkeypatch)
    assert summary["interrupted"] is True
    assert len(early) == 1 and len(real) == (head == "fit_head")
    _assert_complete_predictions(out, root)
    assert summary["predictions_from"] == "the early head" if head == "fit_early_head" else (
        summary["predictions_from"].startswith("head epoch"))
    assert score(out / "predictions.csv", root / "test_labels.csv").accuracy >= 0.5


def test_sigterm_once_the_original_views_are_extracted_still_fits_the_early_head(tmp_path, monkeypatch):
    """SIGTERM as the early output starts (every image's original view extracted, nothing pooled yet): no output
    exists yet, so the early head is still fitted (all its iterations, not cut short) and is the output; no mirrored view is
    extracted, no other head is fitted, and the run ends interrupted with complete predictions."""
    import timebox.online as online
    from timebox.phases import early as early_phase, extract as extract_phase, head as head_phase, second
    from timebox.phases.activations import Pooler

    root = make_synthetic(tmp_path / "data", n_per_class=12, n_test_per_class=4, size=64)
    real_pool, flips = Pooler.__call__, []

    def sigterm_at_the_first_pooling(self, views):
        if not self._pooled:
            os.kill(os.getpid(), signal.SIGTERM)
        return real_pool(self, views)

    monkeypatch.setattr(Pooler, "__call__", sigterm_at_the_first_pooling)
    real_extract = extract_phase.extract_features

    def extract(*args, **kwargs):  # the mirrored views' images extracted
        features = real_extract(*args, **kwargs)
        if kwargs.get("flip"):
            flips.append(features.done)
        return features

    monkeypatch.setattr(extract_phase, "extract_features", extract)
    early = _sigterm_after_call(monkeypatch, early_phase, "fit_early_head", 0)  # records the fits, sends nothing
    real = _sigterm_after_call(monkeypatch, head_phase, "fit_head", 0)
    seconds = _sigterm_after_call(monkeypatch, second, "fit_head", 0)
    out, summary = _small_run(online, root, tmp_path, monkeypatch)
    assert summary["interrupted"] is True
    assert len(early) == 1 and not real and not seconds  # the early head only,
    assert early[0].epochs_run == early[0].epochs_planned  # not cut short
    phases = [p["phase"] for p in json.loads((out / "report" / "timeline.json").read_text())["phases"]]
    assert "early output" in phases
    assert not any(flips), "no mirrored view after the SIGTERM"
    _assert_complete_predictions(out, root)
    assert summary["predictions_from"] == "the early head"


def test_sigterm_before_any_val_image_leaves_the_prior_class_for_every_test_file(tmp_path, monkeypatch):
    """SIGTERM once the images are decoded, before the first val image goes through the backbone: no model can
    exist, so the run returns at once with every test file predicted as the most frequent class (no division
    by the zero images measured, no second backbone, no head)."""
    import timebox.online as online
    from timebox.phases import extract as extract_phase

    root = make_synthetic(tmp_path / "data", n_per_class=12, n_test_per_class=4, size=64)
    _sigterm_after_call(monkeypatch, extract_phase, "build_cache", 2)  # the training and the test images decoded
    monkeypatch.delenv("TIMEBOX_START", raising=False)
    out = tmp_path / "out"
    result = online.run_online(online.OnlineConfig(root / "train", root / "test", out, 120.0, size=64,
                                                   cache_dir=tmp_path / "cache", workers=1))
    assert result.val_accuracy == 0.0 and "interrupted before any model existed" in result.notes
    _assert_complete_predictions(out, root)
    with open(out / "predictions.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))[1:]
    assert {(label, float(confidence)) for _, label, _, confidence in rows} == {("0", 0.0)}  # the prior, unscored
    assert not (out / "model").exists()
