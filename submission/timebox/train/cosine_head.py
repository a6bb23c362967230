"""The cosine (NormFace) head fitted in about a second, in numpy: the early head when the head is a cosine one.

The same model as :func:`timebox.models.heads.build_head` with ``HeadSpec(kind="cosine")`` (its dropout does
nothing at inference): ``scale * normalise(x) @ normalise(kernel)``. The class columns start at their classes'
mean normalised feature (weight imprinting, Qi et al. 2018) and are fitted full-batch by projected gradient descent
with Nesterov momentum on the unit sphere, with label smoothing and class weights. The scale stays at the spec's
(a learnt one stays learnable in the model): Keras' head barely moves it in a short fit, and choosing it by training
loss overfitted (bench/RESULTS.md, 2026-12-07 (15:01Z-), the cosine early head).

Example::

    result = fit_cosine_head(tx, ty, vx, vy, num_classes=6)
    result.model, result.val_accuracy
"""

from __future__ import annotations

import time
from typing import Callable

import numpy as np

from ..models.heads import HeadRows, HeadSpec, build_head
from ..settings import SETTING
from .head import HeadResult
from .linear_head import CHECK_EVERY, lipschitz, probs, result, targets

ITERATIONS = 100  # 300 did no better on trashnet, flowers5 and its long-tailed subset


def _unit(a: np.ndarray, axis: int) -> np.ndarray:
    return a / (np.sqrt((a * a).sum(axis=axis, keepdims=True)) + 1e-12)


def _start(x: np.ndarray, y: np.ndarray, num_classes: int, init: HeadRows | None, seed: int) -> np.ndarray:
    """Unit class columns: each class's mean normalised feature; a pretrained row for a matched class; a random
    direction for a class with no image."""
    w = np.random.default_rng(seed).standard_normal((x.shape[1], num_classes)).astype(np.float32)
    for c in np.unique(y):
        w[:, c] = x[y == c].mean(axis=0)
    if init is not None:
        w[:, init.matched] = init.kernel[:, init.matched]
    return _unit(w, axis=0)


def fit_cosine_head(
    train_x: np.ndarray,
    train_y: np.ndarray,
    val_x: np.ndarray,
    val_y: np.ndarray,
    num_classes: int,
    expired: Callable[[], bool] = lambda: False,
    seed: int = 0,
    spec: HeadSpec = HeadSpec(kind="cosine"),
    iterations: int = ITERATIONS,
    init: HeadRows | None = None,
    label_smoothing: float = SETTING["label_smoothing"].default,
    class_weights: np.ndarray | None = None,
) -> HeadResult:
    """A cosine head (at ``spec``'s scale, learnable further in the model when ``spec.learn_scale``) on ``train_x`` and
    ``train_y`` (class ids), scored on val; stops early (between blocks of ``CHECK_EVERY`` iterations) when
    ``expired()``. Deterministic. ``init``: a pretrained cosine head's rows for the matched classes; ``class_weights``:
    each class's weight in the loss (None: all 1)."""
    train_y = np.asarray(train_y)
    if train_y.ndim != 1:
        raise ValueError(f"fit_cosine_head takes class ids (1-D), not labels of shape {train_y.shape}")
    t0 = time.perf_counter()
    x = _unit(np.asarray(train_x, np.float32), axis=1)
    target, sw = targets(train_y, num_classes, label_smoothing, class_weights)
    w = _start(x, train_y, num_classes, init, seed)
    scale = spec.cosine_scale
    top = lipschitz(x * np.sqrt(sw * len(x)))  # the largest eigenvalue of the weighted x.T @ x
    ahead, momentum, done = w, 1.0, 0
    while done < iterations and not (done % CHECK_EVERY == 0 and done and expired()):
        grad = scale * (x.T @ ((probs(scale * (x @ ahead)) - target) * sw))
        grad -= ahead * (ahead * grad).sum(axis=0, keepdims=True)  # along the sphere
        nxt = _unit(ahead - grad / (0.5 * scale * scale * top), axis=0)
        following = (1 + np.sqrt(1 + 4 * momentum * momentum)) / 2
        ahead = _unit(nxt + ((momentum - 1) / following) * (nxt - w), axis=0)
        w, momentum, done = nxt, following, done + 1
    model = build_head(x.shape[1], num_classes, seed=seed, spec=HeadSpec("cosine", spec.dropout, 0, scale,
                                                                         spec.learn_scale))
    model.get_layer("head_dense").set_weights([w, np.asarray(scale, np.float32)])
    return result(model, probs(scale * (_unit(np.asarray(val_x, np.float32), axis=1) @ w)), val_y, done, iterations,
                  t0)
