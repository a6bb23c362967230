"""The refit: the last fine-tune round trains on the val images too, its end becomes the output unless it fits
those images worse than the output before it did unseen, and the val accuracy reported stays the unseen one."""

from types import SimpleNamespace

import numpy as np
import pytest

from timebox.data.rows import ConcatRows
from timebox.online import _Run


def test_concat_rows_reads_the_parts_as_one_array_without_copying_them():
    a, b = np.arange(6).reshape(3, 2), np.arange(100, 104).reshape(2, 2)
    both = ConcatRows([a, b])
    assert len(both) == 5 and both.shape == (5, 2) and both.dtype == a.dtype
    assert both[np.array([4, 0, 3])].tolist() == [[102, 103], [0, 1], [100, 101]]
    assert both[np.array([], dtype=int)].shape == (0, 2)
    with pytest.raises(IndexError):
        both[np.array([5])]


class _Scored:
    """Predicts the val images' labels right for the first ``right`` of them."""

    def __init__(self, right: int):
        self.right = right


def _run(seen_right, unseen=0.90, seconds_left=1e9, final=False, interrupted=False):
    run = _Run.__new__(_Run)  # only the attributes the refit's output reads
    y_val = np.zeros(100, int)
    run.acts = SimpleNamespace(val=[np.zeros((100, 1))] * 2, y_val=y_val, test=[np.zeros((50, 1))] * 2)
    run.n_views, run.top_rate = 2, 100.0
    run.best = {"val_accuracy": unseen, "source": "finetune epoch 9", "final": final}
    run.last = {"val_accuracy": None, "source": "finetune 2 epoch 8"}
    run.scored = _Scored(seen_right)
    run.budget = SimpleNamespace(interrupted=interrupted)
    run.expired = lambda extra_s=0.0: extra_s >= seconds_left
    run.notes, run.written = [], []
    run.log = lambda message: None
    run.outputs = SimpleNamespace(path="OUT/predictions.csv")
    run._write_predictions = lambda acc, source, final=False, refit=False: run.written.append(
        (acc, source, final, refit))
    return run


@pytest.fixture(autouse=True)
def _predict_by_rightness(monkeypatch):
    def predict(model, views):
        probs = np.zeros((len(views[0]), 2), np.float32)
        probs[: model.right, 0] = 1.0  # label 0: right
        probs[model.right :, 1] = 1.0
        return probs
    monkeypatch.setattr("timebox.online._predict", predict)


def test_the_refit_end_becomes_the_output_with_the_unseen_val_accuracy():
    run = _run(seen_right=98)
    run._refit_output()
    assert run.written == [(0.90, "finetune 2 epoch 8 (refit on the training and val images)", True, True)]
    assert "0.9800 on the val images it trained on" in run.notes[0] and "(finetune epoch 9)" in run.notes[0]


def test_a_refit_that_fits_the_val_images_worse_than_the_unseen_output_is_not_used():
    run = _run(seen_right=85)  # below 0.90: the round broke, whatever the cause
    run._refit_output()
    assert run.written == [] and "0.8500, below the output's 0.9000" in run.notes[0]


def test_no_refit_output_when_its_test_predictions_would_not_fit():
    run = _run(seen_right=98, seconds_left=0.5)  # 2 views x 50 images at 100 img/s: 1 s
    run._refit_output()
    assert run.written == [] and "would not fit" in run.notes[0]


def test_when_only_the_test_predictions_fit_the_refit_is_the_output_unchecked():
    run = _run(seen_right=50, seconds_left=1.5)  # the test predictions 1 s, the check on 100 val images 1 s more
    run._refit_output()
    assert len(run.written) == 1 and "not checked on the val images" in run.notes[0]


@pytest.mark.parametrize("final, interrupted", [(True, False), (False, True)])
def test_an_output_already_final_or_an_interrupted_run_keeps_its_output(final, interrupted):
    run = _run(seen_right=98, final=final, interrupted=interrupted)
    run._refit_output()
    assert run.written == [] and run.notes == []
