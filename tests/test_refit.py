"""The refit: the last fine-tune round trains on the val images too, its end becomes the output unless it fits
those images worse than the output before it did unseen, and the val accuracy reported stays the unseen one."""

from types import SimpleNamespace

import numpy as np
import pytest

from timebox.data.rows import ConcatRows
from timebox.outputs import OutputRecord
from timebox.phases.output_rules import refit_output
from timebox.phases.scoring import Scored
from timebox.plan import Counts

from fakes import context, planner


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

    def predict(self, views):
        probs = np.zeros((len(views[0]), 2), np.float32)
        probs[: self.right, 0] = 1.0  # label 0: right
        probs[self.right :, 1] = 1.0
        return probs


def _case(tmp_path, seen_right, unseen=0.90, seconds_left=1e9, final=False, interrupted=False):
    p = planner(Counts(val=100, test=50, train=1000, views=2), top_rate=100.0, n_views=2, interrupted=interrupted)
    p.expired = lambda extra_s=0.0: extra_s >= seconds_left
    ctx = context(tmp_path, p, OutputRecord(unseen, "finetune epoch 9", final=final))
    written = []
    scorer = SimpleNamespace(last=Scored(None, "finetune 2 epoch 8"), scored=_Scored(seen_right),
                             acts=SimpleNamespace(val=[np.zeros((100, 1))] * 2, y_val=np.zeros(100, int)),
                             write=lambda r: written.append((r.val_accuracy, r.source, r.final, r.refit)))
    return ctx, scorer, written


def test_the_refit_end_becomes_the_output_with_the_unseen_val_accuracy(tmp_path):
    ctx, scorer, written = _case(tmp_path, seen_right=98)
    refit_output(ctx, scorer)
    assert written == [(0.90, "finetune 2 epoch 8 (refit on the training and val images)", True, True)]
    notes = ctx.session.notes
    assert "0.9800 on the val images it trained on" in notes[0] and "(finetune epoch 9)" in notes[0]


def test_a_refit_that_fits_the_val_images_worse_than_the_unseen_output_is_not_used(tmp_path):
    ctx, scorer, written = _case(tmp_path, seen_right=85)  # below 0.90: the round broke, whatever the cause
    refit_output(ctx, scorer)
    assert written == [] and "0.8500, below the output's 0.9000" in ctx.session.notes[0]


def test_no_refit_output_when_its_test_predictions_would_not_fit(tmp_path):
    ctx, scorer, written = _case(tmp_path, seen_right=98, seconds_left=0.5)  # 2 views x 50 images at 100 img/s: 1 s
    refit_output(ctx, scorer)
    assert written == [] and "would not fit" in ctx.session.notes[0]


def test_when_only_the_test_predictions_fit_the_refit_is_the_output_unchecked(tmp_path):
    ctx, scorer, written = _case(tmp_path, seen_right=50, seconds_left=1.5)  # the check on 100 val images: 1 s more
    refit_output(ctx, scorer)
    assert len(written) == 1 and "not checked on the val images" in ctx.session.notes[0]


@pytest.mark.parametrize("final, interrupted", [(True, False), (False, True)])
def test_an_output_already_final_or_an_interrupted_run_keeps_its_output(tmp_path, final, interrupted):
    ctx, scorer, written = _case(tmp_path, seen_right=98, final=final, interrupted=interrupted)
    refit_output(ctx, scorer)
    assert written == [] and ctx.session.notes == []
