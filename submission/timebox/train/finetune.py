"""Fine-tune the last blocks of a backbone, plus the head, on cached activations.

The frozen part of the backbone ran once (its activations are cached, with mirrored views),
so an epoch costs only the trainable top: on a 2-core CPU that is what makes fine-tuning fit
in minutes. Epochs are sized to the time given from a measured step time, the learning rate
(warm-up + cosine) to exactly those steps, and every epoch is scored by the caller's
``on_epoch`` (val accuracy computed by timebox), which keeps checkpoints and outputs.

Example::

    model = keras.Model(a, head(top(a)))
    fine_tune(model, views, y, time_s=200, expired=budget.expired, on_epoch=keep_best)
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import keras
import numpy as np

from ..models.losses import select_loss


@keras.saving.register_keras_serializable(package="timebox")
class WarmupCosine(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up from 10% to ``peak``, then cosine to zero at ``total_steps``.

    ``resize(total_steps)`` changes the end while training, so when the plan changes (more or
    fewer epochs fit than first measured) training still ends annealed instead of cut mid-curve.
    """

    def __init__(self, peak: float, warmup_steps: int, total_steps: int):
        self.peak, self.warmup_steps = float(peak), int(warmup_steps)
        self.total_steps = keras.Variable(float(total_steps), dtype="float32", trainable=False, name="lr_total_steps")

    def resize(self, total_steps: int) -> None:
        self.total_steps.assign(float(total_steps))

    def __call__(self, step):
        step = keras.ops.cast(step, "float32")
        warm = self.peak * (0.1 + 0.9 * step / self.warmup_steps)
        span = keras.ops.maximum(1.0, self.total_steps - self.warmup_steps)
        progress = keras.ops.clip((step - self.warmup_steps) / span, 0.0, 1.0)
        cosine = 0.5 * self.peak * (1.0 + keras.ops.cos(np.pi * progress))
        return keras.ops.where(step < self.warmup_steps, warm, cosine)

    def get_config(self) -> dict:
        return {"peak": self.peak, "warmup_steps": self.warmup_steps,
                "total_steps": float(keras.ops.convert_to_numpy(self.total_steps))}


@dataclass
class FineTuneResult:
    epochs_planned: int
    epochs_run: int
    step_time_s: float
    stopped_by_deadline: bool


@dataclass
class FineTuneState:
    """Where fine-tuning stands after a scored epoch: enough to continue it in another process
    (the model's weights are saved beside it by the caller)."""

    epoch: int
    step: int
    epochs_planned: int
    step_time_s: float
    rng_state: dict
    optimizer_variables: list[np.ndarray]


def freeze_batch_norm(model: keras.Model) -> None:
    """Keep BatchNormalization statistics and affine parameters fixed (small batches, small data)."""
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False
        elif isinstance(layer, keras.Model):
            freeze_batch_norm(layer)


def _batch(views: list[np.ndarray], idx: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One randomly chosen view per sample (e.g. original or mirrored), as float32."""
    choice = rng.integers(0, len(views), len(idx))
    out = np.empty((len(idx), *views[0].shape[1:]), np.float32)
    for v, view in enumerate(views):
        sel = choice == v
        out[sel] = view[idx[sel]]
    return out


def fine_tune(
    model: keras.Model,
    views: list[np.ndarray],
    labels: np.ndarray,
    num_classes: int,
    time_s: float,
    eval_s: float,
    expired: Callable[[], bool],
    on_epoch: Callable[[int, int], None],
    seed: int = 0,
    batch_size: int = 32,
    lr: float = 1e-3,
    max_epochs: int = 100,
    resume: FineTuneState | None = None,
    on_state: Callable[[FineTuneState], None] | None = None,
) -> FineTuneResult:
    """Train ``model`` (activations -> probabilities) on ``views`` of the same samples.

    ``eval_s`` is the caller's cost of ``on_epoch(epoch, step)``; epochs are planned so that
    training plus evaluation fill ``time_s``, re-planned after every epoch from its measured
    duration (the learning-rate schedule is resized with the plan); ``expired()`` is checked
    after every batch. After each scored epoch ``on_state`` gets a :class:`FineTuneState`;
    passing it back as ``resume`` (with the model's weights of that epoch loaded) continues
    from there: optimizer state, schedule position, shuffling and plan included.
    """
    n = len(labels)
    steps_per_epoch = int(np.ceil(n / batch_size))
    rng = np.random.default_rng(seed)
    loss = select_loss(labels, num_classes, label_smoothing=0.1)

    # planned from the measured time of this session's steps 2-4 (step 1 traces the graph), re-planned per epoch
    epochs, step_s, epoch, step = max_epochs, 0.0, 0, 0
    if resume is not None:
        epochs, step_s, epoch, step = resume.epochs_planned, resume.step_time_s, resume.epoch, resume.step
        rng.bit_generator.state = resume.rng_state
    schedule = WarmupCosine(lr, warmup_steps=steps_per_epoch // 2 + 1, total_steps=epochs * steps_per_epoch)
    model.compile(optimizer=keras.optimizers.AdamW(schedule, weight_decay=1e-4), loss=loss)
    if resume is not None:
        model.optimizer.build(model.trainable_variables)
        for variable, value in zip(model.optimizer.variables, resume.optimizer_variables, strict=True):
            variable.assign(value)
    start_time, session_steps = time.perf_counter(), 0
    while epoch < epochs:
        epoch += 1
        epoch_start = time.perf_counter()
        order = rng.permutation(n)
        for start in range(0, n, batch_size):
            idx = order[start : start + batch_size]
            model.train_on_batch(_batch(views, idx, rng), labels[idx])
            step += 1
            session_steps += 1
            if session_steps == 1:
                measure_from = time.perf_counter()
            elif session_steps == 4:
                step_s = (time.perf_counter() - measure_from) / 3
                fit = int(time_s // (steps_per_epoch * step_s + eval_s))  # epochs from this one on
                epochs = int(np.clip(epoch - 1 + fit, 0, max_epochs))
                if epochs < epoch:
                    return FineTuneResult(epochs, epoch - 1, step_s, False)
                schedule.resize(epochs * steps_per_epoch)
            if expired():  # the unfinished epoch is not scored: the best checkpoint stands
                return FineTuneResult(epochs if step_s else 0, epoch - 1, step_s, True)
        on_epoch(epoch, step)
        epoch_s = time.perf_counter() - epoch_start
        left = time_s - (time.perf_counter() - start_time)
        replanned = int(np.clip(epoch + left // epoch_s, epoch, max_epochs))
        if replanned != epochs:
            epochs = replanned
            schedule.resize(epochs * steps_per_epoch)
        if on_state is not None:
            on_state(FineTuneState(epoch, step, epochs, step_s, rng.bit_generator.state,
                                   [keras.ops.convert_to_numpy(v) for v in model.optimizer.variables]))
    return FineTuneResult(epochs, epoch, step_s, False)
