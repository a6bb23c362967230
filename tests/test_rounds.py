"""Fine-tuning in rounds: two when each gets its minimum of epochs, each starting from the head on the
pretrained top, and then the rounds' annealed ends averaged into the model scored last; a second round
cut short by the deadline leaves the best checkpoint as it is."""

from types import SimpleNamespace

import numpy as np
import pytest

import timebox.phases.finetune as finetune_module
from timebox.phases.finetune import FineTunePhase, _Round
from timebox.phases.scoring import Scored
from timebox.plan import Counts
from timebox.settings import SETTING

from fakes import Weights, context, planner

FT_SETUP_S, TRAIN_TRACE_RATIO = SETTING["ft_setup_s"].default, SETTING["train_trace_ratio"].default
ROUND_MIN_EPOCHS, IMAGE_MIN_EPOCHS = SETTING["round_min_epochs"].default, SETTING["image_min_epochs"].default
COUNTS = Counts(val=100, test=200, train=1000, views=2)


def _planner(cut=3):
    return planner(COUNTS, cut=cut, top_rate=100.0, ft_image_s=0.01)


def _phase(tmp_path, monkeypatch, ends, stopped=(), refit=False, rounds=None, save_s=0.0):
    """Fine-tuning whose round ``r`` trains the weights to ``ends[r]`` (or is cut by the deadline, if in
    ``stopped``), with 1000 s to share."""
    p = _planner()
    p.fine_tune_time = lambda: 1000.0
    p.measured.save_s = save_s
    if rounds is not None:
        p.rounds = lambda time_s, eval_s: rounds
    ctx = context(tmp_path, p)
    seen = SimpleNamespace(refits=[], shares=[], started_from=[], scores=[], preferred=[], refit_outputs=[])
    scorer = SimpleNamespace(scored=Weights(0.0), acts=SimpleNamespace(y_val=np.zeros(0 if refit == "no val" else 100)),
                             last=Scored(0.9, "finetune epoch 8"))

    def score(phase, epoch, step):
        seen.scores.append((phase, epoch, step, scorer.scored.get_weights()[0][0]))
        scorer.last = Scored(0.9, f"{phase} epoch {epoch}")

    scorer.score = score
    phase = FineTunePhase(ctx, scorer, image_cut=False)

    def fine_tune_round(rnd, time_s, eval_s):
        seen.refits.append(rnd.refit)
        seen.shares.append(time_s)
        seen.started_from.append(scorer.scored.get_weights()[0][0])
        scorer.scored.set_weights([np.full(3, ends[rnd.r])])
        return {"epochs_run": 8, "steps_planned": 400}, (None if rnd.r in stopped else scorer.scored.get_weights())

    phase.round = fine_tune_round
    monkeypatch.setattr(finetune_module, "prefer_annealed_end", lambda ctx, s: seen.preferred.append(s.last.source))
    monkeypatch.setattr(finetune_module, "refit_output",
                        lambda ctx, s: seen.refit_outputs.append((s.last.source, s.scored.get_weights()[0][0])))
    return phase, seen


def test_two_rounds_when_each_gets_its_minimum_of_epochs():
    p = _planner()
    epoch_s = 1000 * 0.01 + 2.0  # training images x seconds each, plus scoring
    need = 2 * (FT_SETUP_S + ROUND_MIN_EPOCHS * epoch_s)
    assert p.rounds(need, eval_s=2.0) == 2
    assert p.rounds(need - 0.1, eval_s=2.0) == 1


def test_the_image_cut_needs_its_own_minimum_per_round():
    p = _planner(cut=0)
    epoch_s = 1000 * 0.01 + 2.0
    assert p.rounds(2 * (FT_SETUP_S + ROUND_MIN_EPOCHS * epoch_s), eval_s=2.0) == 1
    assert p.rounds(2 * (FT_SETUP_S + IMAGE_MIN_EPOCHS * epoch_s), eval_s=2.0) == 2


def test_a_slow_trace_of_the_cuts_top_plans_each_rounds_setup_longer():
    """Two rounds pay two setups: when the cut's top took long to trace (the image cut: the whole backbone), each
    is planned at ``train_trace_ratio`` times that trace, not ``ft_setup_s``; a round's measured setup counts too."""
    p = _planner(cut=0)
    epoch_s = 1000 * 0.01 + 2.0
    need = 2 * (FT_SETUP_S + IMAGE_MIN_EPOCHS * epoch_s)
    p.measured.top_trace_s = {3: 10.0, 0: FT_SETUP_S / TRAIN_TRACE_RATIO}  # another cut's trace says nothing here
    assert p.rounds(need, eval_s=2.0) == 2
    p.measured.top_trace_s[0] = 2 * FT_SETUP_S / TRAIN_TRACE_RATIO
    assert p.rounds(need, eval_s=2.0) == 1
    assert p.rounds(need + 2 * FT_SETUP_S, eval_s=2.0) == 2
    p.measured.ft_setup_s = 3 * FT_SETUP_S
    assert p.rounds(need + 2 * FT_SETUP_S, eval_s=2.0) == 1
    assert not p.fine_tune_fits(3 * FT_SETUP_S) and p.fine_tune_fits(3 * FT_SETUP_S + 0.25 * 1000 * 0.01)


def test_rounds_start_from_the_same_weights_and_their_ends_are_averaged(tmp_path, monkeypatch):
    phase, seen = _phase(tmp_path, monkeypatch, ends=[1.0, 3.0], rounds=2)
    outcome = phase.run(refit=False)
    assert seen.started_from == [0.0, 0.0]
    assert seen.scores == [("finetune average", 16, 800, 2.0)]  # epochs and steps of both rounds
    assert seen.preferred == ["finetune average epoch 16"]  # the average is the end the output rule weighs
    info = outcome.info()
    assert info["rounds"] == 2 and len(info["round_results"]) == 2
    saved = phase.ctx.state.read("finetune_average", load_arrays=False)  # a resumed run loads it, not averaging again
    assert saved["info"]["last"]["source"] == "finetune average epoch 16"


@pytest.mark.parametrize("rounds", [1, 2])
def test_each_rounds_time_leaves_room_for_the_weights_saved_after_it(tmp_path, monkeypatch, rounds):
    """Each round ends by saving its weights, and two rounds' average is saved too: at the measured cost of a save,
    out of the rounds' time (a refit's end missed its output by about a second without)."""
    phase, seen = _phase(tmp_path, monkeypatch, ends=[1.0, 3.0], refit=True, rounds=rounds, save_s=4.0)
    phase.run(refit=True)
    eval_s = (2 * 100 + 0.5 * 2 * 200) / 100.0  # both val views, half of both test views, at 100 images/s
    if rounds == 1:
        assert seen.shares == [pytest.approx(1000.0 - eval_s - 4.0)]
    else:  # the time left is read anew before each round: here it stays 1000 s
        assert seen.shares == [pytest.approx((1000.0 - eval_s - 3 * 4.0) / 2), pytest.approx(1000.0 - eval_s - 2 * 4.0)]


def test_a_second_round_cut_by_the_deadline_is_not_averaged(tmp_path, monkeypatch):
    phase, seen = _phase(tmp_path, monkeypatch, ends=[1.0, 3.0], stopped={1}, rounds=2)
    outcome = phase.run(refit=False)
    assert seen.scores == [] and seen.preferred == []  # mid-schedule: the best checkpoint stands
    assert outcome.info()["rounds"] == 2


def test_a_resumed_run_keeps_the_rounds_its_first_session_chose(tmp_path, monkeypatch):
    phase, seen = _phase(tmp_path, monkeypatch, ends=[1.0, 3.0], rounds=1)  # what the time left would say now
    phase.ctx.state.write("finetune", {"state": {}, "rounds": 2})
    assert phase.run(refit=False).info()["rounds"] == 2


def test_one_round_is_the_single_fine_tune(tmp_path, monkeypatch):
    phase, seen = _phase(tmp_path, monkeypatch, ends=[1.0], rounds=1)
    assert phase.run(refit=False).info()["rounds"] == 1
    assert seen.scores == [] and len(seen.preferred) == 1  # its last epoch, scored by fine_tune's own epochs


def test_a_resumed_round_that_fitted_no_epoch_returns_its_result_without_weights(tmp_path):
    ctx = context(tmp_path, _planner())
    result = {"epochs_run": 0, "steps_planned": 0}
    ctx.state.write("finetune", {"finished": True, "result": result, "rounds": 1})
    phase = FineTunePhase(ctx, SimpleNamespace(scored=Weights(0.0)), image_cut=False)
    assert phase.round(_Round(0, 1, False), time_s=100.0, eval_s=1.0) == (result, None)


def test_with_refit_the_last_round_trains_on_val_too_and_its_average_is_not_scored(tmp_path, monkeypatch):
    phase, seen = _phase(tmp_path, monkeypatch, ends=[1.0, 3.0], refit=True, rounds=2)
    outcome = phase.run(refit=True)
    assert seen.refits == [False, True]  # the first round stays scored on val: checkpoints, outputs
    assert seen.scores == [] and seen.preferred == []  # the average saw the val images: val cannot score it
    assert seen.refit_outputs == [("finetune average epoch 16", 2.0)]
    assert outcome.refit and outcome.info()["rounds"] == 2


def test_a_single_refit_round_is_the_whole_fine_tune(tmp_path, monkeypatch):
    phase, seen = _phase(tmp_path, monkeypatch, ends=[1.0], refit=True, rounds=1)
    assert phase.run(refit=True).refit
    assert seen.refits == [True] and len(seen.refit_outputs) == 1 and seen.preferred == []


def test_a_refit_round_cut_by_the_deadline_leaves_the_scored_output(tmp_path, monkeypatch):
    phase, seen = _phase(tmp_path, monkeypatch, ends=[1.0, 3.0], stopped={1}, refit=True, rounds=2)
    outcome = phase.run(refit=True)
    assert seen.refit_outputs == [] and seen.preferred == [] and not outcome.refit


def test_no_val_images_means_no_refit(tmp_path, monkeypatch):
    phase, seen = _phase(tmp_path, monkeypatch, ends=[1.0], refit="no val", rounds=1)
    phase.run(refit=True)
    assert seen.refits == [False] and seen.refit_outputs == [] and len(seen.preferred) == 1
