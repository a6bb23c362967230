"""Keras callbacks of the training loop: one small class per concern.

Example::

    best = BestValAccuracy(val_x, val_y)
    model.fit(x, y, epochs=50, callbacks=[DeadlineStop(budget.expired), best])
    model.set_weights(best.best_weights)
"""

from __future__ import annotations

from typing import Callable

import keras
import numpy as np

from ..metrics import accuracy, log_loss
from ..models.schedules import WarmupCosine


class DeadlineStop(keras.callbacks.Callback):
    """Stops training after the batch during which ``expired()`` became true."""

    def __init__(self, expired: Callable[[], bool]):
        super().__init__()
        self.expired = expired
        self.stopped = False

    def on_train_batch_end(self, batch, logs=None):
        if self.expired():
            self.model.stop_training = self.stopped = True


class BestValAccuracy(keras.callbacks.Callback):
    """After each epoch, scores the model on validation data itself (argmax vs labels) and keeps
    a copy of the best weights: higher val accuracy wins, ties go to lower val loss."""

    def __init__(self, val_x: np.ndarray, val_y: np.ndarray, batch_size: int = 1024):
        super().__init__()
        self.val_x, self.val_y, self.batch_size = val_x, val_y, batch_size
        self.best_accuracy, self.best_loss, self.best_epoch = -1.0, np.inf, -1
        self.best_weights: list[np.ndarray] | None = None
        self.history: list[dict] = []

    def on_epoch_end(self, epoch, logs=None):
        probs = np.concatenate(
            [keras.ops.convert_to_numpy(self.model.predict_on_batch(self.val_x[i : i + self.batch_size]))
             for i in range(0, len(self.val_x), self.batch_size)]
        )
        acc, loss = accuracy(probs, self.val_y), log_loss(probs, self.val_y)
        if logs is not None:  # for the callbacks after this one
            logs.update(val_accuracy=acc, val_loss=loss)
        self.history.append({"epoch": epoch + 1, "train_loss": float((logs or {}).get("loss", np.nan)),
                             "val_accuracy": acc, "val_loss": loss})
        if acc > self.best_accuracy or (acc == self.best_accuracy and loss < self.best_loss):
            self.best_accuracy, self.best_loss, self.best_epoch = acc, loss, epoch + 1
            self.best_weights = [w.copy() for w in self.model.get_weights()]


class EpochEvents(keras.callbacks.Callback):
    """After each epoch, the logs' ``loss`` (and ``val_accuracy``, ``val_loss`` when a callback before this one put
    them there), the optimizer's learning rate and ``left()`` (the budget's seconds left) to
    ``events.scalars(phase, epoch, values)`` (a :class:`timebox.events.RunEvents`; epochs from 1)."""

    def __init__(self, events, phase: str, left: Callable[[], float] | None = None):
        super().__init__()
        self.events, self.phase, self.left = events, phase, left

    def on_epoch_end(self, epoch, logs=None):
        lr = getattr(self.model.optimizer, "learning_rate", None)
        logs = logs or {}
        self.events.scalars(self.phase, epoch + 1, {
            **{k: logs.get(k) for k in ("loss", "val_accuracy", "val_loss")},
            "learning_rate": None if lr is None else float(keras.ops.convert_to_numpy(lr)),
            "time_left_s": self.left() if self.left else None})


PLATEAU_FACTOR, PLATEAU_PATIENCE = 0.5, 2  # lr_schedule plateau: halved after 2 epochs without a better val accuracy


class PlateauDecay(keras.callbacks.Callback):
    """Keras' ReduceLROnPlateau for a :class:`WarmupCosine` of shape ``plateau``: after each epoch whose logs'
    ``val_accuracy`` (put there by a callback before this one) is not above the best for ``patience`` epochs,
    the schedule's factor is multiplied by ``factor``."""

    def __init__(self, schedule: WarmupCosine, factor: float = PLATEAU_FACTOR, patience: int = PLATEAU_PATIENCE):
        super().__init__()
        self.schedule, self.factor, self.patience = schedule, factor, patience
        self.best, self.wait = -np.inf, 0

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get("val_accuracy")
        if value is None:
            return
        if value > self.best:
            self.best, self.wait = value, 0
            return
        self.wait += 1
        if self.wait >= self.patience:
            self.schedule.factor.assign(float(keras.ops.convert_to_numpy(self.schedule.factor)) * self.factor)
            self.wait = 0
