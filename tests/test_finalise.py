"""The finalise phase's val prediction for the report: it never cuts into the end reserve."""

from types import SimpleNamespace

import numpy as np

from fakes import context, planner
from timebox.outputs import OutputRecord
from timebox.phases.finalise import _output_val_probs
from timebox.plan import Counts


def _scorer():
    return SimpleNamespace(checkpoints=SimpleNamespace(best=lambda: None), last=SimpleNamespace(source="finetune epoch 5"),
                           candidates={}, val_probs=lambda source: np.ones((3, 2)) / 2)


def test_a_refit_output_late_gets_no_val_prediction_and_a_note(tmp_path):
    p = planner(Counts(train=100, val=300, test=500, views=1), top_rate=10.0, budget_s=20.0)  # 30 s to predict val
    ctx = context(tmp_path, p, OutputRecord(0.9, "finetune epoch 5", refit=True, final=True))
    probs = _output_val_probs(ctx, _scorer(), SimpleNamespace(model=None))
    assert probs is None
    assert any("confusion matrix" in n for n in ctx.session.notes)


def test_a_refit_output_with_time_left_is_predicted_on_the_val_images(tmp_path):
    p = planner(Counts(train=100, val=300, test=500, views=1), top_rate=10.0, budget_s=1e6)
    ctx = context(tmp_path, p, OutputRecord(0.9, "finetune epoch 5", refit=True, final=True))
    probs = _output_val_probs(ctx, _scorer(), SimpleNamespace(model=None))
    assert probs.shape == (3, 2) and not ctx.session.notes
