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
from ..models.schedules import WarmupCosine
from .callbacks import BestValAccuracy, DeadlineStop, PlateauDecay
from .recipe import Recipe
from .sampling import epoch_order


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


class FeatureBatches(keras.utils.PyDataset):
    """An epoch of the head's training batches as ``recipe`` makes them (sampling, mixing, class weights as sample
    weights); every batch is a function of (seed, epoch, index) alone, whatever order Keras asks for them."""

    def __init__(self, x: np.ndarray, y: np.ndarray, num_classes: int, batch_size: int, recipe: Recipe, seed: int):
        super().__init__()
        self.x, self.y, self.batch_size, self.recipe, self.seed, self.epoch = x, y, batch_size, recipe, seed, 0
        self.weights = recipe.weights(y, num_classes)
        self.mixer = recipe.mixer(num_classes)
        self.order = epoch_order(y, np.random.default_rng([seed, 0]), recipe.sampling)

    def __len__(self) -> int:
        return int(np.ceil(len(self.y) / self.batch_size))

    def __getitem__(self, i: int):
        idx = self.order[i * self.batch_size:(i + 1) * self.batch_size]
        x, y = self.x[idx], self.y[idx]
        w = None if self.weights is None else self.weights[y].astype(np.float32)
        if self.mixer.on:
            x, y, w = self.mixer(x, y, w, np.random.default_rng([self.seed, self.epoch, i]))
        return (x, y) if w is None else (x, y, w)

    def on_epoch_end(self) -> None:
        self.epoch += 1
        self.order = epoch_order(self.y, np.random.default_rng([self.seed, self.epoch]), self.recipe.sampling)


def _compile(head: keras.Model, total_steps: int, lr: float, labels: np.ndarray, num_classes: int,
             recipe: Recipe) -> WarmupCosine:
    schedule = WarmupCosine(lr, max(1, total_steps // 20), total_steps, recipe.lr_schedule)
    head.compile(optimizer=keras.optimizers.AdamW(learning_rate=schedule, weight_decay=1e-4),
                 loss=recipe.keras_loss(labels, num_classes, soft=recipe.mixes))
    return schedule


def _measure_step_time(head: keras.Model, batch: tuple) -> float:
    for _ in range(3):  # warm-up: tracing and first-call costs
        head.train_on_batch(*batch)
    start, n = time.perf_counter(), 10
    for _ in range(n):
        head.train_on_batch(*batch)
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
    init: HeadRows | None = None,
    callbacks: list[keras.callbacks.Callback] = (),
    recipe: Recipe = Recipe(),
) -> HeadResult:
    """Fit a head (``recipe.head``'s shape, trained as ``recipe`` says) within ``time_s`` seconds (and never past
    ``expired()``), starting from ``init``'s rows for the classes a pretrained head had (the second transfer).
    ``callbacks`` run after the head's own (which put ``val_accuracy`` and ``val_loss`` in the epoch's logs)."""
    keras.utils.set_random_seed(seed)
    dim = train_x.shape[1]
    probe = build_head(dim, num_classes, seed=seed, spec=recipe.head)
    _compile(probe, 100, lr, train_y, num_classes, recipe)
    t0 = time.perf_counter()
    fed = recipe.sampling != "uniform" or recipe.mixes  # else Keras shuffles the arrays
    batches = FeatureBatches(train_x, train_y, num_classes, batch_size, recipe, seed) if fed else None
    step_s = _measure_step_time(probe, batches[0] if fed else (train_x[:batch_size], train_y[:batch_size]))
    steps_per_epoch = int(np.ceil(len(train_x) / batch_size))
    val_s = 0.01 + len(val_x) * step_s / batch_size
    usable = max(0.0, time_s - (time.perf_counter() - t0)) * 0.8
    epochs = int(np.clip(usable // (steps_per_epoch * step_s + val_s), 1, max_epochs))

    head = build_head(dim, num_classes, seed=seed, spec=recipe.head)
    if init is not None:
        init.apply(head.get_layer("head_dense"))
    schedule = _compile(head, epochs * steps_per_epoch, lr, train_y, num_classes, recipe)
    best, stop = BestValAccuracy(val_x, val_y), DeadlineStop(expired)
    plateau = [PlateauDecay(schedule)] if recipe.lr_schedule == "plateau" else []
    fit = {"x": batches} if fed else {"x": train_x, "y": train_y, "batch_size": batch_size, "shuffle": True,
                                      "class_weight": recipe.class_weights(train_y, num_classes)}
    head.fit(**fit, epochs=epochs, verbose=0, callbacks=[stop, best, *plateau, *callbacks])
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
