"""Which model becomes the output at the end of fine-tuning: the annealed last epoch, unless it is
more than 2 standard errors (of the best val accuracy, on this many val images) below the best."""

from types import SimpleNamespace

import numpy as np
import pytest

from timebox.metrics import accuracy_noise
from timebox.outputs import OutputRecord
from timebox.phases.output_rules import prefer_annealed_end
from timebox.phases.scoring import Scored
from timebox.plan import Counts

from fakes import context, planner


def _case(tmp_path, best, last, n_val, interrupted=False, final=False, seconds_left=1e9):
    p = planner(Counts(val=n_val, test=500, train=1000, views=2), top_rate=100.0, n_views=2,
                interrupted=interrupted)  # the test predictions take 2 * 500 / 100 = 10 s
    p.expired = lambda extra_s=0.0: extra_s >= seconds_left
    ctx = context(tmp_path, p, OutputRecord(best, "head epoch 54", final=final))
    written = []
    scorer = SimpleNamespace(last=Scored(last, "finetune epoch 10"), acts=SimpleNamespace(y_val=np.zeros(n_val, int)),
                             write=lambda record: written.append((record.val_accuracy, record.source, record.final)))
    return ctx, scorer, written


def test_accuracy_noise_is_the_binomial_standard_error():
    assert accuracy_noise(0.9, 400) == pytest.approx(0.015)


def test_last_epoch_within_two_standard_errors_replaces_the_val_selected_output(tmp_path):
    ctx, scorer, written = _case(tmp_path, best=0.9076, last=0.8878, n_val=303)  # trashnet: 2 SE = 0.033
    prefer_annealed_end(ctx, scorer)
    assert written == [(0.8878, "finetune epoch 10 (end of the schedule)", True)]
    assert "within 2 standard errors" in ctx.session.notes[0]


def test_last_epoch_clearly_worse_keeps_the_best_output(tmp_path):
    ctx, scorer, written = _case(tmp_path, best=0.9076, last=0.85, n_val=303)
    prefer_annealed_end(ctx, scorer)
    assert written == [] and ctx.session.notes == []


def test_more_val_images_make_the_tolerance_narrower(tmp_path):
    ctx, scorer, written = _case(tmp_path, best=0.9076, last=0.8878, n_val=5000)  # 2 SE = 0.008
    prefer_annealed_end(ctx, scorer)
    assert written == []


def test_the_last_epoch_is_not_made_the_output_when_its_test_predictions_would_not_fit(tmp_path):
    ctx, scorer, written = _case(tmp_path, best=0.9076, last=0.8878, n_val=303, seconds_left=9.0)
    prefer_annealed_end(ctx, scorer)
    assert written == [] and "would not fit before the end reserve" in ctx.session.notes[0]
    ctx, scorer, written = _case(tmp_path, best=0.9076, last=0.8878, n_val=303, seconds_left=11.0)
    prefer_annealed_end(ctx, scorer)
    assert len(written) == 1


def test_fine_tuning_leaves_time_for_the_last_epochs_test_predictions(tmp_path):
    p = planner(Counts(val=303, test=500, train=1000, views=2), top_rate=100.0, n_views=2, margin_s=1.0)
    p.budget.remaining = lambda: 100.0
    p.ensemble_s = lambda: 0.0
    reserve = 1.5 * 5.0 + 2.0 + 1.0  # the export (its guess) 1.5 times, the report, the margin
    assert p.reserve_s() == pytest.approx(reserve)
    assert p.fine_tune_time() == pytest.approx(100.0 - reserve - 10.0 - p.cfg.ft_slack_s)


def test_an_interrupted_run_or_an_output_already_chosen_is_left_alone(tmp_path):
    for case in (_case(tmp_path, 0.9, 0.89, 303, interrupted=True), _case(tmp_path, 0.9, 0.89, 303, final=True)):
        ctx, scorer, written = case
        prefer_annealed_end(ctx, scorer)
        assert written == []
