"""Ensembles of val candidates: soft/confidence voting, greedy selection, the held-out guard, drop order.

Pins down that vote respects weights and returns normalised float64 rows, that greedy selection
keeps good members and drops noise, that choose uses an ensemble only when it beats the best
single member on held-out stratified folds (deterministically), that the "models" rule gives each
model (backbone) an equal share whatever its number of checkpoints, and the drop_order tie rule.
"""

import numpy as np
import pytest

from timebox.ensemble import (
    Choice,
    _stratified_folds,
    choose,
    drop_order,
    greedy_weights,
    model_weights,
    vote,
)
from timebox.metrics import accuracy, log_loss

C = 3


def _rows(rng: np.random.Generator, predicted: np.ndarray, top: float) -> np.ndarray:
    """(N, C) rows with ``top`` on the predicted class and the rest split at random."""
    n = len(predicted)
    rest = rng.dirichlet(np.ones(C - 1), size=n) * (1 - top)
    out = np.empty((n, C))
    for i, c in enumerate(predicted):
        out[i, c] = top
        out[i, np.arange(C) != c] = rest[i]
    return out


def _calibrated(rng: np.random.Generator, y: np.ndarray, acc: float) -> np.ndarray:
    """A member right on about ``acc`` of the images, with confidence ``acc`` everywhere."""
    wrong = (y + rng.integers(1, C, size=len(y))) % C
    predicted = np.where(rng.random(len(y)) < acc, y, wrong)
    return _rows(rng, predicted, acc)


def _complementary(n: int = 200, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two members: each confidently right on its own half, slightly wrong on the other half."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, C, size=n)
    half = rng.random(n) < 0.5
    wrong = (y + rng.integers(1, C, size=n)) % C
    sure = np.eye(C)[y] * 0.7 + 0.1  # 0.8 on the true class
    unsure = np.eye(C)[wrong] * 0.1 + np.eye(C)[y] * 0.05 + 0.3  # 0.4 wrong, 0.35 true
    a = np.where(half[:, None], sure, unsure)
    b = np.where(half[:, None], unsure, sure)
    return np.stack([a, b]), y


def _strong_and_noise(n: int = 300, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Member 0 calibrated at 85% accuracy; members 1-3 random Dirichlet rows."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, C, size=n)
    noise = [rng.dirichlet(np.ones(C), size=n) for _ in range(3)]
    return np.stack([_calibrated(rng, y, 0.85), *noise]), y


# vote ------------------------------------------------------------------------------------------


def test_vote_zero_weight_ignores_a_member_and_rows_sum_to_one():
    rng = np.random.default_rng(2)
    probs = rng.dirichlet(np.ones(C), size=(3, 10))
    out = vote(probs, np.array([2.0, 0.0, 0.0]))
    np.testing.assert_allclose(out, probs[0])
    out = vote(probs, np.array([1.0, 3.0, 0.0]))
    np.testing.assert_allclose(out, 0.25 * probs[0] + 0.75 * probs[1])
    np.testing.assert_allclose(out.sum(1), 1.0)


def test_vote_accepts_float16_and_returns_float64_rows_summing_to_one():
    rng = np.random.default_rng(3)
    probs = rng.dirichlet(np.ones(C), size=(2, 10)).astype(np.float16)
    for confidence in (False, True):
        out = vote(probs, np.array([0.3, 0.7]), confidence=confidence)
        assert out.dtype == np.float64 and out.shape == (10, C)
        np.testing.assert_allclose(out.sum(1), 1.0, atol=1e-12)


def test_vote_confidence_lets_a_confident_member_outvote_a_heavier_unsure_one():
    # With equal weights and 2 classes plain averaging already follows the more confident
    # member, so the unsure member carries more weight (as if picked 6 times by greedy).
    probs = np.array([[[0.99, 0.01]], [[0.4, 0.6]]])
    weights = np.array([1.0, 6.0])
    assert vote(probs, weights).argmax(1)[0] == 1
    assert vote(probs, weights, confidence=True).argmax(1)[0] == 0


def test_vote_rejects_negative_or_all_zero_weights():
    probs = np.full((2, 1, 2), 0.5)
    with pytest.raises(ValueError):
        vote(probs, np.array([1.0, -1.0]))
    with pytest.raises(ValueError):
        vote(probs, np.zeros(2))


# greedy_weights -------------------------------------------------------------------------------


def test_greedy_weights_are_non_negative_and_sum_to_one():
    probs, y = _strong_and_noise()
    for confidence in (False, True):
        w = greedy_weights(probs, y, confidence=confidence)
        assert w.shape == (4,) and (w >= 0).all()
        assert w.sum() == pytest.approx(1.0)


def test_greedy_weights_put_nearly_all_weight_on_the_good_member_over_noise():
    probs, y = _strong_and_noise()
    for confidence in (False, True):
        assert greedy_weights(probs, y, confidence=confidence)[0] >= 0.9


def test_greedy_weights_use_both_complementary_members_and_beat_each_single_log_loss():
    probs, y = _complementary()
    w = greedy_weights(probs, y)
    assert (w > 0).all()
    ensemble = log_loss(vote(probs, w), y)
    assert ensemble < min(log_loss(probs[0], y), log_loss(probs[1], y))


# choose ---------------------------------------------------------------------------------------


def test_choose_picks_an_ensemble_for_complementary_members_and_names_it():
    probs, y = _complementary()
    choice = choose(probs, y)
    assert choice.rule != "single"
    assert choice.heldout[choice.rule] > choice.single_heldout
    assert choice.reason.startswith(choice.rule)
    assert choice.weights.sum() == pytest.approx(1.0) and (choice.weights > 0).all()
    assert accuracy(choice.predict(probs), y) > max(accuracy(p, y) for p in probs)


def _three_checkpoints_and_another_model(n: int = 200, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Model A (three identical checkpoints) and model B, each confidently right (0.8) on its own half of
    the images and fairly sure of a wrong class (0.6 against 0.2) on the other."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, C, size=n)
    half = rng.random(n) < 0.5
    wrong = (y + rng.integers(1, C, size=n)) % C
    sure = np.eye(C)[y] * 0.7 + 0.1
    unsure = np.eye(C)[wrong] * 0.4 + 0.2
    a, b = np.where(half[:, None], sure, unsure), np.where(half[:, None], unsure, sure)
    return np.stack([a, a, a, b]), y


def test_model_weights_give_each_model_an_equal_share_split_among_its_candidates():
    np.testing.assert_allclose(model_weights(np.array([0, 0, 0, 1])), [1 / 6, 1 / 6, 1 / 6, 1 / 2])
    np.testing.assert_allclose(model_weights(np.array(["b", "a", "b"])), [1 / 4, 1 / 2, 1 / 4])
    np.testing.assert_allclose(model_weights(np.zeros(4)), np.full(4, 1 / 4))


def test_choose_gives_another_model_half_the_vote_where_a_plain_average_drowns_it():
    probs, y = _three_checkpoints_and_another_model()
    models = np.array([False, False, False, True])
    assert accuracy(vote(probs, np.full(4, 0.25)), y) < 0.6  # three checkpoints outvote the other model
    choice = choose(probs, y, models)
    assert choice.rule == "models"  # greedy ties with it (one A, one B): the simpler rule is taken
    np.testing.assert_allclose(choice.weights, [1 / 6, 1 / 6, 1 / 6, 1 / 2])
    assert choice.heldout["models"] == 1.0 > choice.heldout["average"]


def test_the_models_rule_is_tried_only_when_the_candidates_come_from_several_models():
    probs, y = _three_checkpoints_and_another_model()
    assert "models" not in choose(probs, y).heldout
    assert "models" not in choose(probs, y, np.zeros(4)).heldout
    with pytest.raises(ValueError, match="models must have shape"):
        choose(probs, y, np.zeros(3))


def test_choose_breaks_ties_between_ensemble_rules_towards_the_simpler_rule():
    probs, y = _complementary()
    choice = choose(probs, y)
    assert choice.heldout["average"] == choice.heldout["greedy-confidence"]
    assert choice.rule == "average"


def test_choose_keeps_the_single_best_member_when_ensembles_do_not_help_held_out():
    probs, y = _strong_and_noise()
    choice = choose(probs, y)
    assert choice.rule == "single" and not choice.confidence
    np.testing.assert_array_equal(choice.weights, [1.0, 0.0, 0.0, 0.0])
    assert "no ensemble rule beat" in choice.reason
    assert set(choice.heldout) == {"single", "average", "greedy", "greedy-confidence"}
    np.testing.assert_allclose(choice.predict(probs), probs[0])


def test_a_winning_rule_whose_refit_keeps_one_candidate_is_not_used(monkeypatch):
    """Greedy selection refit on all of val can pick one candidate: that is no ensemble, so the next winning
    rule is used, or the single output stays (it is chosen by timebox's own rule for single models)."""
    import timebox.ensemble as ensemble_module

    probs, y = _complementary()
    fit = ensemble_module._fit

    def greedy_collapses(rule, p, labels, models=None):  # greedy: an even vote on the folds, one candidate when refit
        if rule.startswith("greedy"):
            weights = np.eye(len(p))[0] if len(labels) == len(y) else np.full(len(p), 1 / len(p))
            return weights, False
        return fit(rule, p, labels, models)

    monkeypatch.setattr(ensemble_module, "_fit", greedy_collapses)
    monkeypatch.setattr(ensemble_module, "RULES", ("single", "greedy", "greedy-confidence"))
    choice = choose(probs, y)
    assert choice.rule == "single" and "kept one candidate" in choice.reason
    monkeypatch.setattr(ensemble_module, "RULES", ("single", "greedy", "average"))
    choice = choose(probs, y)
    assert choice.rule == "average" and (choice.weights > 0).sum() == 2
    assert "greedy refit on all of val kept one candidate" in choice.reason


def test_choose_with_one_candidate_returns_single_at_once():
    probs, y = _strong_and_noise()
    choice = choose(probs[:1], y)
    assert isinstance(choice, Choice) and choice.rule == "single"
    np.testing.assert_array_equal(choice.weights, [1.0])
    assert "one candidate" in choice.reason


def test_choose_is_deterministic_for_a_seed():
    probs, y = _complementary(seed=5)
    a, b = choose(probs, y, folds=3, seed=7), choose(probs, y, folds=3, seed=7)
    assert (a.rule, a.confidence, a.heldout, a.reason) == (b.rule, b.confidence, b.heldout, b.reason)
    np.testing.assert_array_equal(a.weights, b.weights)


def test_choose_raises_when_there_are_fewer_images_than_folds():
    probs, y = _complementary(n=3)
    with pytest.raises(ValueError, match="3 validation images into 4 folds"):
        choose(probs, y, folds=4)


def test_stratified_folds_balance_every_class_and_keep_every_fold_non_empty():
    y = np.array([0] * 10 + [1] * 7 + [2] * 2 + [3])  # classes 2 and 3 are rarer than folds
    fold_of = _stratified_folds(y, 3, seed=0)
    assert fold_of.shape == y.shape and set(fold_of) == {0, 1, 2}
    sizes = np.bincount(fold_of, minlength=3)
    assert sizes.max() - sizes.min() <= 1
    for c in np.unique(y):
        per_fold = np.bincount(fold_of[y == c], minlength=3)
        assert per_fold.max() - per_fold.min() <= 1
    np.testing.assert_array_equal(fold_of, _stratified_folds(y, 3, seed=0))
    assert not np.array_equal(fold_of, _stratified_folds(y, 3, seed=1))


# drop_order -----------------------------------------------------------------------------------


def test_drop_order_drops_the_least_useful_group_first():
    weights = np.array([0.5, 0.1, 0.0, 0.3, 0.1])
    assert drop_order(weights, [[0, 1], [2], [3, 4]]) == [1, 2, 0]


def test_drop_order_ties_drop_the_later_group_first():
    weights = np.array([0.25, 0.25, 0.5])
    assert drop_order(weights, [[0], [1], [2]]) == [1, 0, 2]
    weights = np.array([0.3, 0.1, 0.2, 0.0, 0.4])  # in floats 0.1 + 0.2 > 0.3: still a tie
    assert drop_order(weights, [[0], [1, 2], [3], [4]]) == [2, 1, 0, 3]


def test_held_out_accuracy_is_pooled_over_folds_of_unequal_size():
    """Images right over all val images, not the mean of per-fold accuracies: with 7 images in folds of 4 and
    3, a fold mean such as (3/4 + 1/3) / 2 is no count over 7, and the best single member's held-out score
    is its held-out images right / 7, recomputed here fold by fold."""
    rng = np.random.default_rng(5)
    y = np.array([0, 0, 1, 1, 2, 2, 0])
    probs = rng.dirichlet(np.ones(C), size=(3, len(y)))
    choice = choose(probs, y, folds=2, seed=0)
    for rule, acc in choice.heldout.items():
        assert acc * len(y) == pytest.approx(round(acc * len(y))), rule
    fold_of = _stratified_folds(y, 2, 0)
    assert sorted(np.bincount(fold_of)) == [3, 4]
    right = 0
    for k in range(2):
        fit, held = fold_of != k, fold_of == k
        best = min(range(3), key=lambda m: (-accuracy(probs[m, fit], y[fit]), log_loss(probs[m, fit], y[fit]), m))
        right += int(np.sum(probs[best, held].argmax(1) == y[held]))
    assert choice.single_heldout == pytest.approx(right / len(y))
