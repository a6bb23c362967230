"""The early output's head: softmax regression fitted in numpy (fit_linear_head), as a Keras head model."""

import numpy as np
import pytest

from timebox.metrics import accuracy
from timebox.train.linear_head import CHECK_EVERY, ITERATIONS, fit_linear_head


def _blobs(n_per_class, seed, dim=32, classes=4, offset=0.0, scale=1.0):
    """Gaussian classes, shifted by ``offset`` and scaled by ``scale``."""
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(7).normal(0, 1.0, (classes, dim)).astype(np.float32)
    y = np.repeat(np.arange(classes), n_per_class)
    x = (centres[y] + rng.normal(0, 0.4, (len(y), dim))) * scale + offset
    return x.astype(np.float32), y


@pytest.fixture(scope="module")
def data():
    return _blobs(100, seed=1, offset=5.0), _blobs(25, seed=2, offset=5.0)


@pytest.mark.parametrize("scale", [0.01, 1.0, 100.0])
def test_learns_classes_whatever_the_features_offset_and_scale(scale):
    (tx, ty), (vx, vy) = (_blobs(n, seed=s, offset=5.0 * scale, scale=scale) for n, s in ((100, 1), (25, 2)))
    result = fit_linear_head(tx, ty, vx, vy, num_classes=4)
    assert result.val_accuracy >= 0.95
    assert result.epochs_run == result.chosen_epoch == ITERATIONS and not result.stopped_by_deadline
    assert result.history[-1]["val_accuracy"] == result.val_accuracy


def test_one_scale_for_all_features_keeps_weak_features_weights_small():
    """A feature with a hundredth of the others' spread gets no larger weight than they do (a scale per feature
    would multiply its weight by a hundred: fine-tuning from such a head went worse)."""
    (tx, ty), (vx, vy) = _blobs(100, seed=1), _blobs(25, seed=2)
    tx, vx = tx.copy(), vx.copy()
    tx[:, 0] *= 0.01
    vx[:, 0] *= 0.01
    kernel, _ = fit_linear_head(tx, ty, vx, vy, num_classes=4).model.get_layer("head_dense").get_weights()
    assert np.abs(kernel[0]).max() <= np.abs(kernel[1:]).max()


def test_the_keras_model_predicts_what_was_scored(data):
    """The head is a Keras model (build_head's: saved, composed and fine-tuned like fit_head's), and its
    probabilities are the fitted ones: the standardization is folded into its weights."""
    (tx, ty), (vx, vy) = data
    result = fit_linear_head(tx, ty, vx, vy, num_classes=4)
    probs = np.asarray(result.model.predict_on_batch(vx))
    assert probs.shape == (len(vx), 4)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert accuracy(probs, vy) == pytest.approx(result.val_accuracy)


def test_is_deterministic(data):
    (tx, ty), (vx, vy) = data
    a, b = (fit_linear_head(tx, ty, vx, vy, num_classes=4).model.get_weights() for _ in range(2))
    for wa, wb in zip(a, b):
        np.testing.assert_array_equal(wa, wb)


def test_stops_when_expired_and_says_so(data):
    (tx, ty), (vx, vy) = data
    result = fit_linear_head(tx, ty, vx, vy, num_classes=4, expired=lambda: True)
    assert result.epochs_run == CHECK_EVERY and result.stopped_by_deadline
    assert result.val_accuracy > 0.5  # a usable head even so


def test_refuses_soft_labels_clearly(data):
    (tx, ty), (vx, vy) = data
    with pytest.raises(ValueError, match="class ids"):
        fit_linear_head(tx, np.eye(4)[ty], vx, vy, num_classes=4)
