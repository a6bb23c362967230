"""The classifier head fitted in well under a second: softmax regression on pooled features, in numpy.

The same model as :func:`timebox.models.heads.build_head` (its dropout does nothing at inference),
fitted full-batch by accelerated gradient descent (FISTA) with an L2 penalty and label smoothing, for a
fixed number of iterations, on features centred and divided by one scale for all (not one per feature:
that gave low-variance features weights 5-7 times fit_head's largest, and fine-tuning from such a head
scored 1.6-1.8 test points lower in two 2-minute trashnet runs). On trashnet's pooled Lite0 features
(224 px, 1,719 training images, five splits) 100 iterations took 0.3-0.8 s and scored 88.7-90.7% on
test, where ``fit_head`` given 3 s (3.3-4.8 s with its traces) scored 87.3-88.5%, with weights of a
like size: the first output's head (see bench/RESULTS.md).

Example::

    result = fit_linear_head(tx, ty, vx, vy, num_classes=6)
    result.model, result.val_accuracy
"""

from __future__ import annotations

import time
from typing import Callable

import keras
import numpy as np

from ..metrics import accuracy, log_loss
from ..models.heads import HeadRows, build_head
from ..settings import SETTING
from .head import HeadResult

L2 = 0.03  # on the scaled features; on trashnet 0.01 scored as well, with weights a third larger than fit_head's
ITERATIONS = 100  # on trashnet, 200 and 300 did no better (the weights' norm moved by 3%)
CHECK_EVERY = 10  # iterations between looks at ``expired``


def probs(logits: np.ndarray) -> np.ndarray:
    logits = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(logits)
    return e / e.sum(axis=1, keepdims=True)


def lipschitz(x: np.ndarray, iterations: int = 20) -> float:
    """The largest eigenvalue of ``x.T @ x / len(x)`` (power iteration): the gradient's Lipschitz constant
    of softmax cross-entropy, halved, is at most that."""
    v = np.random.default_rng(0).standard_normal(x.shape[1]).astype(np.float32)
    for _ in range(iterations):
        v = x.T @ (x @ v)
        v /= np.linalg.norm(v) + 1e-12
    return float(v @ (x.T @ (x @ v))) / len(x)


def targets(labels: np.ndarray, num_classes: int, label_smoothing: float,
            class_weights: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """The smoothed one-hot targets of class ids ``labels``, and each image's share of the (weighted) loss."""
    target = np.full((len(labels), num_classes), label_smoothing / num_classes, np.float32)
    target[np.arange(len(labels)), labels] += 1 - label_smoothing
    weight = np.ones(len(labels), np.float32) if class_weights is None else np.asarray(class_weights, np.float32)[labels]
    return target, weight[:, None] / len(labels)


def result(model: keras.Model, val_probs: np.ndarray, val_y: np.ndarray, done: int, iterations: int, t0: float) -> HeadResult:
    """A numpy-fitted head as :func:`timebox.train.head.fit_head` reports one: its ``done`` iterations as epochs."""
    entry = {"epoch": done, "train_loss": float("nan"), "val_accuracy": accuracy(val_probs, val_y),
             "val_loss": log_loss(val_probs, val_y)}
    return HeadResult(model=model, val_accuracy=entry["val_accuracy"], val_loss=entry["val_loss"], chosen_epoch=done,
                      epochs_planned=iterations, epochs_run=done, stopped_by_deadline=done < iterations,
                      step_time_s=(time.perf_counter() - t0) / max(done, 1), history=[entry])


def fit_linear_head(
    train_x: np.ndarray,
    train_y: np.ndarray,
    val_x: np.ndarray,
    val_y: np.ndarray,
    num_classes: int,
    expired: Callable[[], bool] = lambda: False,
    seed: int = 0,
    l2: float = L2,
    iterations: int = ITERATIONS,
    init: HeadRows | None = None,
    label_smoothing: float = SETTING["label_smoothing"].default,
    class_weights: np.ndarray | None = None,
) -> HeadResult:
    """A softmax head on ``train_x`` (features) and ``train_y`` (class ids), scored on val; stops early (between
    blocks of ``CHECK_EVERY`` iterations) when ``expired()``. Deterministic; ``seed`` seeds the model's layers.
    ``init``: a pretrained head's rows to start the matched classes from (the others start at zero);
    ``class_weights``: each class's weight in the loss (None: all 1)."""
    train_y = np.asarray(train_y)
    if train_y.ndim != 1:
        raise ValueError(f"fit_linear_head takes class ids (1-D), not labels of shape {train_y.shape}")
    t0 = time.perf_counter()
    x = np.asarray(train_x, np.float32)
    mean = x.mean(axis=0)
    scale = float(x.std()) or 1.0
    x = np.hstack([(x - mean) / scale, np.ones((len(x), 1), np.float32)])  # the last column: the bias
    xt = np.ascontiguousarray(x.T)
    target, sw = targets(train_y, num_classes, label_smoothing, class_weights)
    penalised = np.ones((x.shape[1], 1), np.float32)
    penalised[-1] = 0.0  # the bias is not
    step = 1.0 / (0.5 * lipschitz(x * np.sqrt(sw * len(x))) + 2 * l2)  # of the weighted loss
    w = np.zeros((x.shape[1], num_classes), np.float32)
    if init is not None:  # the pretrained rows, in the standardised features' coordinates
        m = init.matched
        w[:-1, m], w[-1, m] = init.kernel[:, m] * scale, init.bias[m] + mean @ init.kernel[:, m]
    ahead, momentum, done = w, 1.0, 0
    while done < iterations and not (done % CHECK_EVERY == 0 and done and expired()):
        grad = xt @ ((probs(x @ ahead) - target) * sw) + 2 * l2 * penalised * ahead
        nxt = ahead - step * grad
        following = (1 + np.sqrt(1 + 4 * momentum * momentum)) / 2
        ahead = nxt + ((momentum - 1) / following) * (nxt - w)
        w, momentum, done = nxt, following, done + 1
    kernel = w[:-1] / scale
    bias = w[-1] - mean @ kernel
    model = build_head(len(mean), num_classes, seed=seed)
    model.get_layer("head_dense").set_weights([kernel, bias])
    return result(model, probs(np.asarray(val_x, np.float32) @ kernel + bias), val_y, done, iterations, t0)
