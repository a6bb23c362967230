"""The early output's cosine head: NormFace fitted in numpy (fit_cosine_head), as the Keras cosine head model."""

import numpy as np
import pytest

from timebox.metrics import accuracy
from timebox.models.heads import HeadRows, HeadSpec
from timebox.train.cosine_head import ITERATIONS, fit_cosine_head
from timebox.train.linear_head import CHECK_EVERY


def _blobs(n_per_class, seed, dim=32, classes=4, counts=None):
    """Non-negative Gaussian classes (like pooled ReLU features), all sharing a large common offset."""
    rng = np.random.default_rng(seed)
    centres = np.abs(np.random.default_rng(7).normal(0, 1.0, (classes, dim)))
    y = np.repeat(np.arange(classes), counts or n_per_class)
    x = np.abs(centres[y] + rng.normal(0, 0.5, (len(y), dim))) + 2.0
    return x.astype(np.float32), y


@pytest.fixture(scope="module")
def data():
    return _blobs(100, seed=1), _blobs(25, seed=2)


def test_learns_classes_that_share_a_large_offset(data):
    (tx, ty), (vx, vy) = data
    result = fit_cosine_head(tx, ty, vx, vy, num_classes=4)
    assert result.val_accuracy >= 0.95
    assert result.epochs_run == result.chosen_epoch == ITERATIONS and not result.stopped_by_deadline


def test_fitting_lowers_the_loss_from_the_imprinted_start(data):
    (tx, ty), (vx, vy) = data
    start = fit_cosine_head(tx, ty, tx, ty, num_classes=4, iterations=0)
    fitted = fit_cosine_head(tx, ty, tx, ty, num_classes=4)
    assert fitted.val_loss < 0.8 * start.val_loss


def test_the_keras_model_is_the_cosine_head_and_predicts_what_was_scored(data):
    """The head is build_head's cosine model (saved, composed and fine-tuned like fit_head's): unit class columns,
    the spec's scale, learnable, and the fitted probabilities."""
    (tx, ty), (vx, vy) = data
    result = fit_cosine_head(tx, ty, vx, vy, num_classes=4)
    kernel, scale = result.model.get_layer("head_dense").get_weights()
    np.testing.assert_allclose(np.linalg.norm(kernel, axis=0), 1.0, atol=1e-5)
    assert float(scale) == HeadSpec().cosine_scale and len(result.model.get_layer("head_dense").trainable_weights) == 2
    probs = np.asarray(result.model.predict_on_batch(vx))
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert accuracy(probs, vy) == pytest.approx(result.val_accuracy)


def test_a_fixed_scale_stays_fixed(data):
    (tx, ty), (vx, vy) = data
    result = fit_cosine_head(tx, ty, vx, vy, num_classes=4, spec=HeadSpec("cosine", cosine_scale=10.0,
                                                                           learn_scale=False))
    assert float(result.model.get_layer("head_dense").get_weights()[1]) == 10.0
    assert not result.model.get_layer("head_dense").trainable_weights[1:]  # fine-tuning keeps it too


def test_class_weights_move_the_boundary_towards_the_light_class():
    """A heavy weight on a rare class raises its recall on overlapping classes."""
    (tx, ty), (vx, vy) = _blobs(0, 1, classes=2, counts=[200, 20]), _blobs(0, 2, classes=2, counts=[200, 200])
    tx[:, :] += np.random.default_rng(3).normal(0, 1.5, tx.shape).clip(-2, None).astype(np.float32)
    vx[:, :] += np.random.default_rng(4).normal(0, 1.5, vx.shape).clip(-2, None).astype(np.float32)
    recall = []
    for weights in (None, np.array([0.55, 5.5])):
        probs = fit_cosine_head(tx, ty, vx, vy, 2, class_weights=weights).model.predict_on_batch(vx)
        recall.append(float((np.asarray(probs).argmax(1)[vy == 1] == 1).mean()))
    assert recall[1] > recall[0]


def test_pretrained_rows_start_the_matched_classes(data):
    (tx, ty), (vx, vy) = data
    rows = HeadRows(np.eye(32, 4, dtype=np.float32) * 3, np.zeros(4, np.float32), np.array([True, False, True, False]),
                    "cosine")
    kernel = fit_cosine_head(tx, ty, vx, vy, 4, init=rows, iterations=0).model.get_layer("head_dense").get_weights()[0]
    np.testing.assert_allclose(kernel[:, [0, 2]], np.eye(32, 4, dtype=np.float32)[:, [0, 2]], atol=1e-6)
    unit_mean = tx[ty == 1] / np.linalg.norm(tx[ty == 1], axis=1, keepdims=True)
    np.testing.assert_allclose(kernel[:, 1], unit_mean.mean(0) / np.linalg.norm(unit_mean.mean(0)), atol=1e-5)


def test_is_deterministic_and_stops_when_expired(data):
    (tx, ty), (vx, vy) = data
    a, b = (fit_cosine_head(tx, ty, vx, vy, num_classes=4).model.get_weights() for _ in range(2))
    for wa, wb in zip(a, b):
        np.testing.assert_array_equal(wa, wb)
    result = fit_cosine_head(tx, ty, vx, vy, num_classes=4, expired=lambda: True)
    assert result.epochs_run == CHECK_EVERY and result.stopped_by_deadline and result.val_accuracy > 0.5


def test_refuses_soft_labels_clearly(data):
    (tx, ty), (vx, vy) = data
    with pytest.raises(ValueError, match="class ids"):
        fit_cosine_head(tx, np.eye(4)[ty], vx, vy, num_classes=4)
