"""Head training: fit_head within a time budget, keeping the best epoch by timebox's own val accuracy,
and the two callbacks it is built from (BestValAccuracy, DeadlineStop)."""

import keras
import numpy as np
import pytest
from keras import layers

from timebox.metrics import accuracy
from timebox.train.callbacks import BestValAccuracy, DeadlineStop
from timebox.train.head import fit_head


def _blobs(n_per_class, seed, dim=16, classes=3):
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(123).normal(0, 1.0, (classes, dim)).astype(np.float32)
    y = np.repeat(np.arange(classes), n_per_class)
    x = centres[y] + rng.normal(0, 0.3, (len(y), dim)).astype(np.float32)
    order = rng.permutation(len(y))
    return x[order], y[order]


@pytest.fixture(scope="module")
def blobs():
    # enough steps for the default lr (1e-3): ~15 batches per epoch
    (tx, ty), (vx, vy) = _blobs(300, seed=1), _blobs(30, seed=2)
    return tx, ty, vx, vy


@pytest.fixture(scope="module")
def fitted(blobs):
    tx, ty, vx, vy = blobs
    return fit_head(tx, ty, vx, vy, num_classes=3, time_s=5.0, seed=0, max_epochs=30)


def test_fit_head_learns_separable_blobs(fitted):
    assert fitted.val_accuracy >= 0.9
    assert fitted.chosen_epoch == fitted.epochs_run <= fitted.epochs_planned
    assert not fitted.stopped_by_deadline
    assert fitted.step_time_s > 0
    assert len(fitted.history) == fitted.epochs_run


def test_fit_head_returns_the_annealed_last_epochs_weights(fitted, blobs):
    """A head that ran its whole schedule returns its last (annealed) epoch, not the luckiest one;
    the returned model's own argmax accuracy on val is the reported val accuracy."""
    _, _, vx, vy = blobs
    probs = np.asarray(fitted.model.predict_on_batch(vx))
    assert probs.shape == (len(vx), 3)
    assert accuracy(probs, vy) == fitted.val_accuracy
    assert fitted.history[-1]["val_accuracy"] == fitted.val_accuracy


def test_fit_head_runs_the_planned_epochs_when_time_is_plentiful(blobs):
    """epochs are capped by max_epochs; with time to spare exactly that many run."""
    tx, ty, vx, vy = blobs
    result = fit_head(tx, ty, vx, vy, num_classes=3, time_s=1000.0, max_epochs=3)
    assert result.epochs_planned == 3 and result.epochs_run == 3


def test_fit_head_stops_after_the_first_batch_when_expired(blobs):
    tx, ty, vx, vy = blobs
    result = fit_head(tx, ty, vx, vy, num_classes=3, time_s=60.0, expired=lambda: True, max_epochs=20)
    assert result.stopped_by_deadline
    assert result.epochs_run == 1
    assert result.epochs_planned > 1
    # even a stopped run returns a usable model and a real val accuracy
    assert 0.0 <= result.val_accuracy <= 1.0
    assert result.model.predict_on_batch(vx).shape == (len(vx), 3)


# --- callbacks, driven by hand -------------------------------------------------------------------


@pytest.fixture
def linear_model():
    inputs = keras.Input((2,))
    return keras.Model(inputs, layers.Dense(2, activation="softmax", name="dense")(inputs))


VAL_X = np.array([[1.0, 0.0], [0.0, 1.0], [2.0, 0.0], [0.0, 2.0]], dtype=np.float32)
VAL_Y = np.array([0, 1, 0, 1])


def _set(model, kernel):
    model.get_layer("dense").set_weights([np.asarray(kernel, np.float32), np.zeros(2, np.float32)])


def test_best_val_accuracy_keeps_the_earlier_better_epoch(linear_model):
    cb = BestValAccuracy(VAL_X, VAL_Y, batch_size=3)  # 3 exercises the batched prediction
    cb.set_model(linear_model)
    good = np.eye(2)
    _set(linear_model, good)
    cb.on_epoch_end(0, {"loss": 0.5})
    _set(linear_model, -np.eye(2))  # all wrong
    cb.on_epoch_end(1, {"loss": 0.4})
    assert cb.best_epoch == 1 and cb.best_accuracy == 1.0
    np.testing.assert_array_equal(cb.best_weights[0], good)
    assert [h["val_accuracy"] for h in cb.history] == [1.0, 0.0]
    assert cb.history[0]["train_loss"] == 0.5 and cb.history[1]["epoch"] == 2


def test_best_weights_are_a_copy_not_a_live_reference(linear_model):
    cb = BestValAccuracy(VAL_X, VAL_Y)
    cb.set_model(linear_model)
    _set(linear_model, np.eye(2))
    cb.on_epoch_end(0)
    _set(linear_model, np.zeros((2, 2)))
    np.testing.assert_array_equal(cb.best_weights[0], np.eye(2))


def test_best_val_accuracy_tie_goes_to_lower_loss(linear_model):
    cb = BestValAccuracy(VAL_X, VAL_Y)
    cb.set_model(linear_model)
    _set(linear_model, np.eye(2))
    cb.on_epoch_end(0)
    _set(linear_model, 5 * np.eye(2))  # same accuracy, more confident -> lower loss
    cb.on_epoch_end(1)
    _set(linear_model, 2 * np.eye(2))  # same accuracy, higher loss than epoch 2
    cb.on_epoch_end(2)
    assert cb.best_epoch == 2
    assert cb.best_loss < cb.history[0]["val_loss"]
    np.testing.assert_array_equal(cb.best_weights[0], 5 * np.eye(2))


def test_deadline_stop_sets_stop_training_only_once_expired(linear_model):
    state = {"expired": False}
    cb = DeadlineStop(lambda: state["expired"])
    cb.set_model(linear_model)
    linear_model.stop_training = False
    cb.on_train_batch_end(0)
    assert linear_model.stop_training is False and cb.stopped is False
    state["expired"] = True
    cb.on_train_batch_end(1)
    assert linear_model.stop_training is True and cb.stopped is True


def test_fitted_head_composed_with_an_extractor_saves_and_reloads(fitted, blobs, tmp_path):
    """The head fit_head returns (compiled with timebox's smoothed loss) can be saved inside the
    uint8 classifier and loaded back with registry.load_model, as `online` and `predict` do."""
    from timebox.models.heads import compose_classifier
    from timebox.models.registry import load_model

    inputs = keras.Input((16,), dtype="uint8")
    extractor = keras.Model(inputs, layers.Rescaling(1.0)(inputs))
    classifier = compose_classifier(extractor, fitted.model)
    classifier.save(tmp_path / "model.keras")
    loaded = load_model(tmp_path / "model.keras")
    x = np.random.default_rng(0).integers(0, 5, (4, 16), dtype=np.uint8)
    np.testing.assert_allclose(np.asarray(loaded.predict_on_batch(x)), np.asarray(classifier.predict_on_batch(x)),
                               rtol=1e-6, atol=1e-6)
