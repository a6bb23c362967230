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

from ..config import FINETUNE_LR
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
    steps_planned: int = 0
    last_epoch_steps: int = 0  # steps of the last epoch run: fewer than an epoch's when it was shortened to fit
    setup_s: float = 0.0  # from the call to the end of its first step (compiling and tracing the step)


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
    steps_planned: int = 0


def plan_steps(step: int, epoch_start: int, left_s: float, step_s: float, eval_s: float, steps_per_epoch: int,
               min_epoch_steps: int) -> int:
    """The step at which training should end to fit ``left_s`` seconds from ``step``.

    Whole epochs first (each followed by an evaluation costing ``eval_s``), then a shortened last
    epoch if at least ``min_epoch_steps`` of it fit. ``epoch_start`` is where the epoch in progress
    began (``== step`` between epochs). A result below ``step`` means the epoch in progress cannot
    be made useful: stop without scoring it.

    >>> plan_steps(0, 0, left_s=12.0, step_s=1.0, eval_s=1.0, steps_per_epoch=4, min_epoch_steps=1)
    9
    """
    step_s = max(step_s, 1e-9)
    epoch_s = steps_per_epoch * step_s + eval_s
    current = (epoch_start + steps_per_epoch - step) * step_s + eval_s  # the rest of the epoch in progress
    if current > left_s:
        if left_s < eval_s:  # the epoch in progress could not even be scored
            return epoch_start
        end, start = step + int((left_s - eval_s) // step_s), epoch_start
    else:
        start = epoch_start + steps_per_epoch
        left_s -= current
        start += steps_per_epoch * int(left_s // epoch_s)
        left_s %= epoch_s
        end = start + max(0, int((left_s - eval_s) // step_s))
    return end if end - start >= min_epoch_steps else start


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
    lr: float = FINETUNE_LR,
    max_epochs: int = 100,
    resume: FineTuneState | None = None,
    on_state: Callable[[FineTuneState], None] | None = None,
    augment: Callable[[np.ndarray, np.random.Generator], np.ndarray] | None = None,
) -> FineTuneResult:
    """Train ``model`` (activations -> probabilities) on ``views`` of the same samples.

    ``eval_s`` is the caller's cost of ``on_epoch(epoch, step)``; epochs are planned so that
    training plus evaluation fill ``time_s``, re-planned after every epoch from its measured
    duration (the learning-rate schedule is resized with the plan); ``expired()`` is checked
    after every batch. After each scored epoch ``on_state`` gets a :class:`FineTuneState`;
    passing it back as ``resume`` (with the model's weights of that epoch loaded) continues
    from there: optimizer state, schedule position, shuffling and plan included. ``augment`` (e.g.
    :func:`timebox.train.augment.random_resized_crop`) transforms every training batch.
    """
    call_time = time.perf_counter()
    n = len(labels)
    steps_per_epoch = int(np.ceil(n / batch_size))
    min_epoch_steps = max(1, steps_per_epoch // 4)  # a shortened last epoch is worth its evaluation from here
    rng = np.random.default_rng(seed)
    loss = select_loss(labels, num_classes, label_smoothing=0.1)

    # planned from the measured time of this session's steps 2-4 (step 1 traces the graph), re-planned per epoch
    max_steps = max_epochs * steps_per_epoch
    end_step, step_s, epoch, step = max_steps, 0.0, 0, 0
    if resume is not None:
        end_step, step_s, epoch, step = resume.steps_planned, resume.step_time_s, resume.epoch, resume.step
        rng.bit_generator.state = resume.rng_state
    schedule = WarmupCosine(lr, warmup_steps=steps_per_epoch // 2 + 1, total_steps=end_step)
    model.compile(optimizer=keras.optimizers.AdamW(schedule, weight_decay=1e-4), loss=loss)
    if resume is not None:
        model.optimizer.build(model.trainable_variables)
        for variable, value in zip(model.optimizer.variables, resume.optimizer_variables, strict=True):
            variable.assign(value)

    def result(stopped: bool, epochs_run: int, last_epoch_steps: int) -> FineTuneResult:
        planned = end_step if step_s else 0
        return FineTuneResult(-(-planned // steps_per_epoch), epochs_run, step_s, stopped, planned, last_epoch_steps,
                              round(session_from - call_time, 3) if session_steps else 0.0)

    start_time, session_steps, epoch_steps = time.perf_counter(), 0, 0
    while step < end_step:
        epoch += 1
        epoch_start, epoch_steps, measure_from = step, 0, time.perf_counter()
        order = rng.permutation(n)
        for start in range(0, n, batch_size):
            if step >= end_step:  # a last epoch shortened to fit
                break
            idx = order[start : start + batch_size]
            batch = _batch(views, idx, rng)
            model.train_on_batch(batch if augment is None else augment(batch, rng), labels[idx])
            step += 1
            epoch_steps += 1
            session_steps += 1
            if epoch_steps == 1 and steps_per_epoch > 1:
                measure_from = time.perf_counter()  # the epoch's step time without its first step (tracing, caches)
            if session_steps == 1:
                session_from = time.perf_counter()
            elif session_steps == 4:
                step_s = (time.perf_counter() - session_from) / 3
                left = time_s - (time.perf_counter() - start_time)
                end_step = min(plan_steps(step, epoch_start, left, step_s, eval_s, steps_per_epoch, min_epoch_steps),
                               max_steps)
                if end_step < step:
                    return result(False, epoch - 1, 0)
                schedule.resize(end_step)
            if expired():  # the unfinished epoch is not scored: the best checkpoint stands
                return result(True, epoch - 1, 0)
        trained_until = time.perf_counter()
        on_epoch(epoch, step)
        eval_s = time.perf_counter() - trained_until
        if epoch_steps > 1 or steps_per_epoch == 1:  # re-measured (a shortened epoch of one step keeps the last)
            step_s = (trained_until - measure_from) / max(1, epoch_steps - 1)
        left = time_s - (time.perf_counter() - start_time)
        replanned = min(plan_steps(step, step, left, step_s, eval_s, steps_per_epoch, min_epoch_steps), max_steps)
        if replanned != end_step:
            end_step = replanned
            schedule.resize(end_step)
        if on_state is not None:
            on_state(FineTuneState(epoch, step, -(-end_step // steps_per_epoch), step_s, rng.bit_generator.state,
                                   [keras.ops.convert_to_numpy(v) for v in model.optimizer.variables], end_step))
    return result(False, epoch, epoch_steps)
