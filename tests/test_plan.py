"""The planner answers every "does it fit / how long" from the settings, the counts, the measurements and
the time left; it imports neither TensorFlow nor Keras, and these tests run without them."""

import subprocess
import sys
from pathlib import Path

import pytest

from timebox.plan import Counts

from fakes import planner

SUBMISSION = Path(__file__).resolve().parents[1] / "submission"


def test_plan_imports_without_tensorflow_or_keras():
    code = ("import sys; sys.modules['tensorflow'] = None; sys.modules['keras'] = None\n"
            "import timebox.plan, timebox.settings, timebox.config\n"
            "assert 'tensorflow' not in sys.modules or sys.modules['tensorflow'] is None")
    subprocess.run([sys.executable, "-c", code], check=True, env={"PYTHONPATH": str(SUBMISSION)})


@pytest.mark.parametrize("export_s, margin_s, budget_s, reserve", [
    (5.0, None, 100.0, 1.5 * 5.0 + 2.0 + 5.0),  # the export's guess; the margin's floor of 5 s
    (2.0, None, 3600.0, 1.5 * 2.0 + 2.0 + 72.0),  # a measured export; 2% of an hour
    (2.0, 1.0, 3600.0, 1.5 * 2.0 + 2.0 + 1.0),  # a margin given
])
def test_the_end_reserve_holds_the_export_the_report_and_the_margin(export_s, margin_s, budget_s, reserve):
    p = planner(Counts(10, 10, 10), budget_s=budget_s, margin_s=margin_s)
    p.measured.export_s = export_s
    assert p.reserve_s() == pytest.approx(reserve)


@pytest.mark.parametrize("budget_s, head_s", [(60, 5.0), (300, 15.0), (3600, 30.0)])
def test_the_heads_share_is_clipped(budget_s, head_s):
    assert planner(Counts(10, 10, 10), budget_s=budget_s).head_s == head_s


def test_mirrored_views_only_when_fine_tuning_keeps_its_epochs():
    p = planner(Counts(val=100, test=100, train=1000), ft_image_s=0.01)  # an epoch: 10 s; views at 100 img/s
    p.budget.remaining = lambda: p.reserve_s() + p.head_s + 12.0 + p.cfg.early_output_s + 40.1
    assert p.mirrors_fit(train_mirror=True, finetune=True)  # 12 s of views, then 40.1 s > 4 epochs
    p.budget.remaining = lambda: p.reserve_s() + p.head_s + 12.0 + p.cfg.early_output_s + 39.9
    assert not p.mirrors_fit(train_mirror=True, finetune=True)
    assert p.mirrors_fit(train_mirror=False, finetune=True)  # without train's: 2 s of views, no head
    assert p.mirrors_fit(train_mirror=True, finetune=False)


def test_the_head_gets_the_time_when_fine_tuning_cannot_fit_an_epoch():
    p = planner(Counts(val=100, test=100, train=1000, views=2), ft_image_s=1.0)  # an epoch: 1000 s
    p.budget.remaining = lambda: p.reserve_s() + 100.0
    plan = p.head_plan(early=True, interrupted=False)
    assert not plan.early and plan.time_s == pytest.approx(100.0 - p.cfg.export_guess_s - 2.0)
    assert "the head gets" in plan.note


def test_the_early_head_is_the_head_when_fine_tuning_fits():
    p = planner(Counts(val=100, test=100, train=1000, views=2), ft_image_s=0.001)
    p.budget.remaining = lambda: p.reserve_s() + 500.0
    plan = p.head_plan(early=True, interrupted=False)
    assert plan.early and plan.time_s == 0.0 and plan.note is None and plan.ensemble_time


def test_an_ensemble_too_large_for_its_share_gives_its_time_to_fine_tuning():
    p = planner(Counts(val=100, test=100, train=1000, views=2), ft_image_s=0.001)
    p.voting = True
    p.budget.remaining = lambda: p.reserve_s() + 100.0
    p.ensemble_s = lambda: 50.0  # over 25% of what is left after the head
    plan = p.head_plan(early=False, interrupted=False)
    assert not plan.ensemble_time and "fine-tuning gets it" in plan.note


def test_the_second_backbone_is_planned_only_within_its_share():
    p = planner(Counts(10, 10, 10), budget_s=600.0)
    assert p.second_plan_s(1000) == 0.0  # no second backbone
    p.second_planned, p.measured.full_image_s = True, 0.01
    expected = p.cfg.second_setup_s + 1.2 * 1000 * 0.01 + p.head_s
    assert p.second_plan_s(1000) == pytest.approx(expected)
    assert p.second_plan_s(10_000) == 0.0  # over 10% of the budget


def test_zoomed_views_fit_their_share_and_need_the_decoded_images():
    p = planner(Counts(val=100, test=100, train=1000, views=2), budget_s=3600.0)
    p.voting = True
    assert p.zoom_views() == 0  # a resumed session: no decoded images
    p.zoom_sources = True
    assert p.zoom_views() == 2
    p.cfg.tta_crops = 4  # the corner crops join them, within the same share
    assert p.zoom_views() == 6
    p.cfg.zoom_share = 0.01  # 36 s, 14 s a view: as many views as fit
    assert p.zoom_views() == 2
    p.cfg.zoom_share = 0.0
    assert p.zoom_views() == 0


@pytest.mark.parametrize("latency_ms, single_ms, estimate_ms, rounds", [
    (None, 10.0, 50.0, 1),  # no budget: measured once
    (100.0, 10.0, 50.0, 1),  # far under it
    (100.0, 10.0, 80.0, 3 + 2 + 1),  # near it: one per possible drop
    (100.0, 0.0, 10.0, 3 + 2 + 1),  # the single latency not measured: cannot tell
])
def test_latency_rounds(latency_ms, single_ms, estimate_ms, rounds):
    p = planner(Counts(10, 10, 10), latency_ms=latency_ms)
    p.measured.single_latency_ms = single_ms
    assert p.latency_rounds(views=2, estimate_ms=estimate_ms) == rounds


def test_a_step_starts_when_its_plan_less_the_overrun_fits():
    p = planner(Counts(10, 10, 10))
    p.budget.remaining = lambda: p.reserve_s() + 8.1
    assert p.starts(10.0) and not p.starts(10.0, keep_s=0.2)


def test_no_fine_tuning_without_a_split_or_with_it_off():
    assert not planner(Counts(10, 10, 10), cut=None).fine_tune_fits(1e9)
    assert not planner(Counts(10, 10, 10), finetune=False).fine_tune_fits(1e9)


def test_a_head_the_early_head_is_not_is_always_fitted_and_its_time_planned_before_the_cut():
    assert not planner(Counts(10, 10, 10), head="softmax").keras_head
    assert not planner(Counts(10, 10, 10), head="cosine").keras_head
    assert planner(Counts(10, 10, 10), head="cosine", head_hidden=64).keras_head
    assert planner(Counts(10, 10, 10), head="softmax", head_hidden=64).keras_head
