"""Train a classifier head on cached features for as many epochs as the time allows.

The step time is measured first, the number of epochs is sized to the time given, and the
learning rate (linear warm-up, then cosine) is sized to exactly those steps, so training ends
annealed: the annealed last epoch is the model returned. Picking the best of a hundred noisy
epochs by val accuracy would overstate the head on val and let it beat fine-tuned models that
are better on test; only a run cut short by its deadline falls back to its best epoch. Every
epoch is scored by timebox's own val accuracy and kept in the history.

Example::

    result = fit_head(tx, ty, vx, vy, num_classes=6, time_s=30, expired=budget.expired)
    result.model, result.val_accuracy
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import keras
import numpy as np

from ..models.heads import HeadRows, build_head
from .recipe import Recipe
from .callbacks import BestValAccuracy, DeadlineStop


@dataclass
class HeadResult:
    model: keras.Model
    val_accuracy: float
    val_loss: float
    chosen_epoch: int
    epochs_planned: int
    epochs_run: int
    stopped_by_deadline: bool
    step_time_s: float
    history: list[dict] = field(default_factory=list)


def _compile(head: keras.Model, total_steps: int, lr: float, labels: np.ndarray, num_classes: int,
             recipe: Recipe) -> None:
    warmup = max(1, total_steps // 20)
    schedule = keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=lr * 0.1, decay_steps=max(1, total_steps - warmup), warmup_target=lr, warmup_steps=warmup
    )
    head.compile(
        optimizer=keras.optimizers.AdamW(learning_rate=schedule, weight_decay=1e-4),
        loss=recipe.keras_loss(labels, num_classes),
    )


def _measure_step_time(head: keras.Model, x: np.ndarray, y: np.ndarray, batch_size: int) -> float:
    xb, yb = x[:batch_size], y[:batch_size]
    for _ in range(3):  # warm-up: tracing and first-call costs
        head.train_on_batch(xb, yb)
    start, n = time.perf_counter(), 10
    for _ in range(n):
        head.train_on_batch(xb, yb)
    return (time.perf_counter() - start) / n


def fit_head(
    train_x: np.ndarray,
    train_y: np.ndarray,
    val_x: np.ndarray,
    val_y: np.ndarray,
    num_classes: int,
    time_s: float,
    expired: Callable[[], bool] = lambda: False,
    seed: int = 0,
    batch_size: int = 64,
    max_epochs: int = 150,
    lr: float = 1e-3,
    dropout: float = 0.3,
    init: HeadRows | None = None,
    callbacks: list[keras.callbacks.Callback] = (),
    recipe: Recipe = Recipe(),
) -> HeadResult:
    """Fit a softmax head within ``time_s`` seconds (and never past ``expired()``), starting from ``init``'s rows
    for the classes a pretrained head had (the second transfer). ``callbacks`` run after the head's own (which put
    ``val_accuracy`` and ``val_loss`` in the epoch's logs)."""
    keras.utils.set_random_seed(seed)
    dim = train_x.shape[1]
    probe = build_head(dim, num_classes, dropout=dropout, seed=seed)
    _compile(probe, 100, lr, train_y, num_classes, recipe)
    t0 = time.perf_counter()
    step_s = _measure_step_time(probe, train_x, train_y, batch_size)
    steps_per_epoch = int(np.ceil(len(train_x) / batch_size))
    val_s = 0.01 + len(val_x) * step_s / batch_size
    usable = max(0.0, time_s - (time.perf_counter() - t0)) * 0.8
    epochs = int(np.clip(usable // (steps_per_epoch * step_s + val_s), 1, max_epochs))

    head = build_head(dim, num_classes, dropout=dropout, seed=seed)
    if init is not None:
        init.apply(head.get_layer("head_dense"))
    _compile(head, epochs * steps_per_epoch, lr, train_y, num_classes, recipe)
    best, stop = BestValAccuracy(val_x, val_y), DeadlineStop(expired)
    head.fit(train_x, train_y, batch_size=batch_size, epochs=epochs, shuffle=True, verbose=0,
             callbacks=[stop, best, *callbacks], class_weight=recipe.class_weights(train_y, num_classes))
    if stop.stopped and best.best_weights is not None:
        head.set_weights(best.best_weights)
        chosen = best.history[best.best_epoch - 1]
    else:
        chosen = best.history[-1]
    return HeadResult(
        model=head,
        val_accuracy=chosen["val_accuracy"],
        val_loss=chosen["val_loss"],
        chosen_epoch=chosen["epoch"],
        epochs_planned=epochs,
        epochs_run=len(best.history),
        stopped_by_deadline=stop.stopped,
        step_time_s=step_s,
        history=best.history,
    )
