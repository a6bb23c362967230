"""Fine-tuning in rounds: two when each gets its minimum of epochs, each starting from the head on the
pretrained top, and then the rounds' annealed ends averaged into the model scored last; a second round
cut short by the deadline leaves the best checkpoint as it is."""

from types import SimpleNamespace

import numpy as np
import pytest

from timebox.online import FT_SETUP_S, IMAGE_MIN_EPOCHS, ROUND_MIN_EPOCHS, TRAIN_TRACE_RATIO, _Run
from timebox.recovery import RunState


class _Weights:
    """Stands in for the scored model: weights that can be read, set and saved."""

    def __init__(self, value: float):
        self.w = [np.full(3, value)]

    def get_weights(self):
        return [w.copy() for w in self.w]

    def set_weights(self, weights):
        self.w = [np.array(w, dtype=float) for w in weights]

    def save_weights(self, path):
        np.save(path + ".npy", self.w[0])


def _run(tmp_path, ends, stopped=(), cut=3, refit=False):
    """A run whose round ``r`` trains the weights to ``ends[r]`` (or is cut by the deadline, if in ``stopped``)."""
    run = _Run.__new__(_Run)  # only the attributes fine-tuning's rounds read
    run.acts = SimpleNamespace(y_train=np.zeros(1000), ft_image_s=0.01, val=[np.zeros((100, 1))] * 2,
                               test=[np.zeros((200, 1))] * 2, y_val=np.zeros(100))
    run.refit, run.refits, run.refit_outputs = refit, [], []
    run.n_views, run.extractor, run.spec = 2, SimpleNamespace(top=object(), cut=cut), SimpleNamespace(
        cuts=SimpleNamespace(image=0))
    run.state, run.scored = RunState(tmp_path), _Weights(0.0)
    run._fine_tune_time = lambda: 1000.0
    run.started_from, run.scores, run.preferred, run.shares = [], [], [], []
    run.last = {"val_accuracy": 0.9, "source": "finetune epoch 8"}
    run.save_s = 0.0
    run.top_trace_s, run.ft_setup_seen = {}, 0.0

    def fine_tune_round(r, rounds, time_s, eval_s, refit=False):
        run.refits.append(refit)
        run.shares.append(time_s)
        run.started_from.append(run.scored.get_weights()[0][0])
        run.scored.set_weights([np.full(3, ends[r])])
        result = {"epochs_run": 8, "steps_planned": 400}
        return result, (None if r in stopped else run.scored.get_weights())

    def score(phase, epoch, step):
        run.scores.append((phase, epoch, step, run.scored.get_weights()[0][0]))
        run.last = {"val_accuracy": 0.9, "source": f"{phase} epoch {epoch}"}

    run._fine_tune_round, run.score = fine_tune_round, score
    run._prefer_annealed_end = lambda: run.preferred.append(run.last["source"])
    run._refit_output = lambda: run.refit_outputs.append((run.last["source"], run.scored.get_weights()[0][0]))
    return run


def test_two_rounds_when_each_gets_its_minimum_of_epochs(tmp_path):
    run = _run(tmp_path, [])
    epoch_s = 1000 * 0.01 + 2.0  # training images x seconds each, plus scoring
    need = 2 * (FT_SETUP_S + ROUND_MIN_EPOCHS * epoch_s)
    assert run._rounds(need, eval_s=2.0) == 2
    assert run._rounds(need - 0.1, eval_s=2.0) == 1


def test_the_image_cut_needs_its_own_minimum_per_round(tmp_path):
    run = _run(tmp_path, [], cut=0)
    epoch_s = 1000 * 0.01 + 2.0
    assert run._rounds(2 * (FT_SETUP_S + ROUND_MIN_EPOCHS * epoch_s), eval_s=2.0) == 1
    assert run._rounds(2 * (FT_SETUP_S + IMAGE_MIN_EPOCHS * epoch_s), eval_s=2.0) == 2


def test_a_slow_trace_of_the_cuts_top_plans_each_rounds_setup_longer(tmp_path):
    """Two rounds pay two setups: when the cut's top took long to trace (the image cut: the whole backbone), each
    is planned at ``TRAIN_TRACE_RATIO`` times that trace, not ``FT_SETUP_S``; a round's measured setup counts too."""
    run = _run(tmp_path, [], cut=0)
    epoch_s = 1000 * 0.01 + 2.0
    need = 2 * (FT_SETUP_S + IMAGE_MIN_EPOCHS * epoch_s)
    run.top_trace_s = {3: 10.0, 0: FT_SETUP_S / TRAIN_TRACE_RATIO}  # another cut's trace says nothing of this one
    assert run._rounds(need, eval_s=2.0) == 2
    run.top_trace_s[0] = 2 * FT_SETUP_S / TRAIN_TRACE_RATIO
    assert run._rounds(need, eval_s=2.0) == 1
    assert run._rounds(need + 2 * FT_SETUP_S, eval_s=2.0) == 2
    run.ft_setup_seen = 3 * FT_SETUP_S
    assert run._rounds(need + 2 * FT_SETUP_S, eval_s=2.0) == 1
    run.cfg = SimpleNamespace(finetune=True)
    assert not run._fine_tune_fits(3 * FT_SETUP_S) and run._fine_tune_fits(3 * FT_SETUP_S + 0.25 * 1000 * 0.01)


def test_rounds_start_from_the_same_weights_and_their_ends_are_averaged(tmp_path, monkeypatch):
    run = _run(tmp_path, ends=[1.0, 3.0])
    monkeypatch.setattr(_Run, "_rounds", lambda self, time_s, eval_s: 2)
    info = run._fine_tune({"top_rate": 100.0})
    assert run.started_from == [0.0, 0.0]
    assert run.scores == [("finetune average", 16, 800, 2.0)]  # epochs and steps of both rounds
    assert run.preferred == ["finetune average epoch 16"]  # the average is the end the output rule weighs
    assert info["rounds"] == 2 and len(info["round_results"]) == 2
    saved = run.state.read("finetune_average", load_arrays=False)  # a resumed run loads it instead of averaging again
    assert saved["info"]["last"]["source"] == "finetune average epoch 16"


@pytest.mark.parametrize("rounds", [1, 2])
def test_each_rounds_time_leaves_room_for_the_weights_saved_after_it(tmp_path, monkeypatch, rounds):
    """Each round ends by saving its weights, and two rounds' average is saved too: at the measured cost of a save,
    out of the rounds' time (a refit's end missed its output by about a second without)."""
    run = _run(tmp_path, ends=[1.0, 3.0], refit=True)
    run.save_s = 4.0
    monkeypatch.setattr(_Run, "_rounds", lambda self, time_s, eval_s: rounds)
    run._fine_tune({"top_rate": 100.0})
    eval_s = (2 * 100 + 0.5 * 2 * 200) / 100.0  # both val views, half of both test views, at 100 images/s
    if rounds == 1:
        assert run.shares == [pytest.approx(1000.0 - eval_s - 4.0)]
    else:  # the time left is read anew before each round: here it stays 1000 s
        assert run.shares == [pytest.approx((1000.0 - eval_s - 3 * 4.0) / 2), pytest.approx(1000.0 - eval_s - 2 * 4.0)]


def test_a_second_round_cut_by_the_deadline_is_not_averaged(tmp_path, monkeypatch):
    run = _run(tmp_path, ends=[1.0, 3.0], stopped={1})
    monkeypatch.setattr(_Run, "_rounds", lambda self, time_s, eval_s: 2)
    info = run._fine_tune({"top_rate": 100.0})
    assert run.scores == [] and run.preferred == []  # mid-schedule: the best checkpoint stands
    assert info["rounds"] == 2


def test_a_resumed_run_keeps_the_rounds_its_first_session_chose(tmp_path, monkeypatch):
    run = _run(tmp_path, ends=[1.0, 3.0])
    run.state.write("finetune", {"state": {}, "rounds": 2})
    monkeypatch.setattr(_Run, "_rounds", lambda self, time_s, eval_s: 1)  # what the time left would say now
    assert run._fine_tune({"top_rate": 100.0})["rounds"] == 2


def test_one_round_is_the_single_fine_tune(tmp_path, monkeypatch):
    run = _run(tmp_path, ends=[1.0])
    monkeypatch.setattr(_Run, "_rounds", lambda self, time_s, eval_s: 1)
    assert run._fine_tune({"top_rate": 100.0})["rounds"] == 1
    assert run.scores == [] and len(run.preferred) == 1  # its last epoch, scored by fine_tune's own epochs


def test_a_resumed_round_that_fitted_no_epoch_returns_its_result_without_weights(tmp_path):
    run = _run(tmp_path, ends=[])
    result = {"epochs_run": 0, "steps_planned": 0}
    run.state.write("finetune", {"finished": True, "result": result, "rounds": 1})
    run.log = lambda message: None
    assert _Run._fine_tune_round(run, 0, 1, time_s=100.0, eval_s=1.0) == (result, None)


def test_with_refit_the_last_round_trains_on_val_too_and_its_average_is_not_scored(tmp_path, monkeypatch):
    run = _run(tmp_path, ends=[1.0, 3.0], refit=True)
    monkeypatch.setattr(_Run, "_rounds", lambda self, time_s, eval_s: 2)
    info = run._fine_tune({"top_rate": 100.0})
    assert run.refits == [False, True]  # the first round stays scored on val: checkpoints, outputs
    assert run.scores == [] and run.preferred == []  # the average saw the val images: val cannot score it
    assert run.refit_outputs == [("finetune average epoch 16", 2.0)]
    assert info["refit"] and info["rounds"] == 2


def test_a_single_refit_round_is_the_whole_fine_tune(tmp_path, monkeypatch):
    run = _run(tmp_path, ends=[1.0], refit=True)
    monkeypatch.setattr(_Run, "_rounds", lambda self, time_s, eval_s: 1)
    assert run._fine_tune({"top_rate": 100.0})["refit"]
    assert run.refits == [True] and len(run.refit_outputs) == 1 and run.preferred == []


def test_a_refit_round_cut_by_the_deadline_leaves_the_scored_output(tmp_path, monkeypatch):
    run = _run(tmp_path, ends=[1.0, 3.0], stopped={1}, refit=True)
    monkeypatch.setattr(_Run, "_rounds", lambda self, time_s, eval_s: 2)
    info = run._fine_tune({"top_rate": 100.0})
    assert run.refit_outputs == [] and run.preferred == [] and not info["refit"]


def test_no_val_images_means_no_refit(tmp_path, monkeypatch):
    run = _run(tmp_path, ends=[1.0], refit=True)
    run.acts.y_val = np.zeros(0)
    monkeypatch.setattr(_Run, "_rounds", lambda self, time_s, eval_s: 1)
    run._fine_tune({"top_rate": 100.0})
    assert run.refits == [False] and run.refit_outputs == [] and len(run.preferred) == 1
