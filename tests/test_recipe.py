"""The training recipe (timebox.train.recipe): class weights as specified, the focal loss as defined, and every
trainer (Keras head, fine-tuning loop, numpy early head) learning with them on a small imbalanced problem."""

import keras
import numpy as np
import pytest

from timebox.config import OnlineConfig
from timebox.train.finetune import fine_tune
from timebox.train.head import fit_head
from timebox.train.linear_head import fit_linear_head
from timebox.train.recipe import Recipe

COUNTS = np.array([60, 30, 10])  # an imbalanced 3-class problem


def _problem(seed=0, counts=COUNTS, dim=8, spread=1.2):
    centres = np.random.default_rng(0).normal(0, 1.5, (len(counts), dim))  # the same classes for every draw
    rng = np.random.default_rng(seed + 1)
    y = np.repeat(np.arange(len(counts)), counts)
    x = (centres[y] + rng.normal(0, spread, (len(y), dim))).astype(np.float32)
    return x, y


def test_balanced_weights_give_every_class_the_same_total_and_a_mean_of_one():
    y = np.repeat(np.arange(3), COUNTS)
    w = Recipe(class_weight="balanced").weights(y, 3)
    np.testing.assert_allclose(w * COUNTS, [100 / 3] * 3)
    assert np.mean(w[y]) == pytest.approx(1.0)
    assert Recipe(class_weight="none").weights(y, 3) is None and Recipe(class_weight="none").class_weights(y, 3) is None


def test_effective_number_weights_follow_cui_et_al_with_a_class_absent():
    y = np.repeat([0, 2], [60, 10])
    w = Recipe(class_weight="effective").weights(y, 3)
    raw = (1 - 0.999) / (1 - 0.999 ** np.array([60.0, 10.0]))
    assert w[1] == 0 and w[0] / w[2] == pytest.approx(raw[0] / raw[1])
    assert np.mean(w[y]) == pytest.approx(1.0)


def test_focal_loss_is_cross_entropy_scaled_by_one_minus_p_to_the_gamma():
    probs = np.array([[0.7, 0.2, 0.1], [0.2, 0.5, 0.3]], np.float32)
    y = np.array([0, 2])
    loss = Recipe(loss="focal", label_smoothing=0.0).keras_loss(y, 3)
    p = probs[np.arange(2), y]
    want = np.mean(-((1 - p) ** 2) * np.log(p))
    assert float(loss(y, probs)) == pytest.approx(want, rel=1e-5)


def test_label_smoothing_and_class_weight_are_settings_of_a_run():
    cfg = OnlineConfig("t", None, "o", 60.0, loss="focal", label_smoothing=0.0, class_weight="effective")
    assert Recipe.of(cfg) == Recipe("focal", 0.0, "effective")
    assert Recipe.of(OnlineConfig("t", None, "o", 60.0)) == Recipe() == Recipe("crossentropy", 0.1, "balanced")


@pytest.mark.parametrize("recipe", [Recipe(class_weight="none"), Recipe(loss="focal"), Recipe(class_weight="balanced"),
                                    Recipe(loss="focal", class_weight="effective", label_smoothing=0.0)])
def test_the_keras_head_learns_with_every_recipe(recipe):
    x, y = _problem()
    vx, vy = _problem(seed=1, counts=[20, 20, 20])
    result = fit_head(x, y, vx, vy, 3, time_s=5.0, max_epochs=40, recipe=recipe)
    losses = [h["train_loss"] for h in result.history]
    assert losses[-1] < losses[0] and result.val_accuracy > 0.5  # chance: 1/3


def test_balanced_weights_raise_the_rare_class_recall_of_the_early_head():
    x, y = _problem(counts=[200, 200, 8], spread=2.0)
    vx, vy = _problem(seed=1, counts=[50, 50, 50], spread=2.0)
    recall = []
    for weights in (None, Recipe(class_weight="balanced").weights(y, 3)):
        head = fit_linear_head(x, y, vx, vy, 3, class_weights=weights)
        pred = np.argmax(head.model.predict_on_batch(vx), axis=1)
        recall.append(np.mean(pred[vy == 2] == 2))
    assert recall[1] > recall[0]


def test_the_fine_tune_loop_learns_with_focal_loss_and_class_weights():
    x, y = _problem()
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(3, activation="softmax")])
    before = float(keras.losses.SparseCategoricalCrossentropy()(y, model.predict_on_batch(x)))
    fine_tune(model, [x], y, 3, time_s=3.0, eval_s=0.0, batch_size=16, lr=1e-2, max_epochs=15,
              recipe=Recipe(loss="focal", class_weight="balanced"))
    after = float(keras.losses.SparseCategoricalCrossentropy()(y, model.predict_on_batch(x)))
    assert after < before
