"""Which model becomes the output at the end of fine-tuning: the annealed last epoch, unless it is
more than 2 standard errors (of the best val accuracy, on this many val images) below the best."""

from types import SimpleNamespace

import numpy as np
import pytest

from timebox.metrics import accuracy_noise
from timebox.online import FT_SLACK_S, _Run


def _run(best, last, n_val, interrupted=False, final=False, seconds_left=1e9):
    run = _Run.__new__(_Run)  # only the attributes the choice reads
    run.best = {"val_accuracy": best, "source": "head epoch 54", "final": final}
    run.last = {"val_accuracy": last, "source": "finetune epoch 10"}
    run.acts = SimpleNamespace(y_val=np.zeros(n_val, int), test=[np.zeros((500, 1))])
    run.n_views, run.top_rate = 2, 100.0  # the test predictions take 2 * 500 / 100 = 10 s
    run.expired = lambda extra_s=0.0: extra_s >= seconds_left
    run.budget = SimpleNamespace(interrupted=interrupted)
    run.notes, run.written = [], []
    run.log = lambda message: None
    run.outputs = SimpleNamespace(path="OUT/predictions.csv")
    run._write_predictions = lambda acc, source, final=False: run.written.append((acc, source, final))
    return run


def test_accuracy_noise_is_the_binomial_standard_error():
    assert accuracy_noise(0.9, 400) == pytest.approx(0.015)


def test_last_epoch_within_two_standard_errors_replaces_the_val_selected_output():
    run = _run(best=0.9076, last=0.8878, n_val=303)  # trashnet, bench/RESULTS.md: 2 SE = 0.033
    run._prefer_annealed_end()
    assert run.written == [(0.8878, "finetune epoch 10 (end of the schedule)", True)]
    assert "within 2 standard errors" in run.notes[0]


def test_last_epoch_clearly_worse_keeps_the_best_output():
    run = _run(best=0.9076, last=0.85, n_val=303)
    run._prefer_annealed_end()
    assert run.written == [] and run.notes == []


def test_more_val_images_make_the_tolerance_narrower():
    run = _run(best=0.9076, last=0.8878, n_val=5000)  # 2 SE = 0.008
    run._prefer_annealed_end()
    assert run.written == []


def test_the_last_epoch_is_not_made_the_output_when_its_test_predictions_would_not_fit():
    run = _run(best=0.9076, last=0.8878, n_val=303, seconds_left=9.0)
    run._prefer_annealed_end()
    assert run.written == [] and "would not fit before the end reserve" in run.notes[0]
    fits = _run(best=0.9076, last=0.8878, n_val=303, seconds_left=11.0)
    fits._prefer_annealed_end()
    assert len(fits.written) == 1


def test_fine_tuning_leaves_time_for_the_last_epochs_test_predictions():
    run = _run(best=0.9076, last=0.8878, n_val=303)
    run.budget = SimpleNamespace(remaining=lambda: 100.0)
    run.reserve, run._ensemble_s = SimpleNamespace(s=7.0), lambda: 0.0
    assert run._fine_tune_time() == pytest.approx(100.0 - 7.0 - 10.0 - FT_SLACK_S)


def test_an_interrupted_run_or_an_output_already_chosen_is_left_alone():
    for run in (_run(0.9, 0.89, 303, interrupted=True), _run(0.9, 0.89, 303, final=True)):
        run._prefer_annealed_end()
        assert run.written == []
