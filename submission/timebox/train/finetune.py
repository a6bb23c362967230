"""Fine-tune the last blocks of a backbone, plus the head, on cached activations.

The frozen part of the backbone ran once (its activations are cached, with mirrored views),
so an epoch costs only the trainable top: on a 2-core CPU that is what makes fine-tuning fit
in minutes. Epochs are sized to the time given from a measured step time, the learning rate
(warm-up + cosine) to exactly those steps, and every epoch is scored by the caller's
:class:`ScoreEpoch` callback (val accuracy computed by timebox), which keeps checkpoints and outputs.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import Callable

import keras
import numpy as np

from ..config import FINETUNE_LR
from ..models.schedules import WarmupCosine
from .callbacks import PlateauDecay
from .recipe import Recipe
from .replicas import Replicas
from .sampling import epoch_order


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


class ScoreEpoch(keras.callbacks.Callback):
    """After each epoch, ``score(epoch, step)`` (epochs from 1): the caller's val accuracy (returned, or None),
    checkpoints, outputs. The loop measures its time and plans the next epochs with it."""

    def __init__(self, score: Callable[[int, int], float | None]):
        super().__init__()
        self.score = score

    def on_epoch_end(self, epoch, logs=None):
        accuracy = self.score(epoch + 1, int(logs["step"]))  # Keras made the logs floats
        if accuracy is not None:  # for the callbacks after this one (lr_schedule plateau's)
            logs["val_accuracy"] = accuracy


class RecoveryState(keras.callbacks.Callback):
    """Keras' BackupAndRestore for this loop: after each scored epoch, ``save(state)`` gets a
    :class:`FineTuneState`, which ``fine_tune(..., resume=state)`` continues from in another process (with the
    model's weights of that epoch, saved by ``save``). It runs after the epoch's plan, whatever its place."""

    def __init__(self, save: Callable[[FineTuneState], None]):
        super().__init__()
        self.save = save

    def on_epoch_end(self, epoch, logs=None):
        self.save(logs["state"])


class _Plan(keras.callbacks.Callback):
    """The loop's own callback: it measures this session's steps 2-4 (step 1 traces the graph) and plans the steps
    from them, then re-plans after every scored epoch (and resizes the learning rate's schedule with the plan)."""

    def __init__(self, loop: "_Loop", states: bool):
        super().__init__()
        self.loop, self.states = loop, states  # states: a RecoveryState follows, the epoch's logs get the state

    def on_train_batch_end(self, batch, logs=None):
        self.loop.measure()

    def on_epoch_end(self, epoch, logs=None):
        self.loop.replan()
        if self.states:
            logs["state"] = self.loop.state()


class _Loop:
    """One session of fine-tuning (see :func:`fine_tune`)."""

    def __init__(self, model: keras.Model, labels: np.ndarray, num_classes: int, time_s: float, eval_s: float,
                 seed: int, batch_size: int, lr: float, max_epochs: int, resume: FineTuneState | None,
                 recipe: Recipe, images: bool, devices: list[str]):
        self.call_time = time.perf_counter()
        self.replicas = Replicas(devices, model) if devices else None
        self.trained = self.replicas.model if self.replicas else model  # the scored model, or its mirrored twin
        batch_size, lr = batch_size * max(1, len(devices)), lr * max(1, len(devices))  # the linear scaling rule
        self.n, self.time_s, self.eval_s, self.batch_size = len(labels), time_s, eval_s, batch_size
        self.steps_per_epoch = int(np.ceil(self.n / batch_size))
        self.min_epoch_steps = max(1, self.steps_per_epoch // 4)  # a shortened last epoch is worth its evaluation
        self.rng = np.random.default_rng(seed)
        self.max_steps = max_epochs * self.steps_per_epoch
        self.end_step, self.step_s, self.epoch, self.step = self.max_steps, 0.0, 0, 0
        if resume is not None:
            self.end_step, self.step_s, self.epoch, self.step = (resume.steps_planned, resume.step_time_s,
                                                                 resume.epoch, resume.step)
            self.rng.bit_generator.state = resume.rng_state
        self.schedule = WarmupCosine(lr, warmup_steps=self.steps_per_epoch // 2 + 1, total_steps=self.end_step,
                                     shape=recipe.lr_schedule)
        self.sampling, self.mixer = recipe.sampling, recipe.mixer(num_classes, images)
        weights = recipe.weights(labels, num_classes)
        self.weights = None if weights is None else weights.astype(np.float32)  # as sample weights
        trained = self.trained
        with self.replicas.scope() if self.replicas else contextlib.nullcontext():
            trained.compile(optimizer=keras.optimizers.AdamW(self.schedule, weight_decay=1e-4),
                            loss=recipe.keras_loss(labels, num_classes, soft=self.mixer.on))
            if resume is not None:
                trained.optimizer.build(trained.trainable_variables)
                for variable, value in zip(trained.optimizer.variables, resume.optimizer_variables, strict=True):
                    variable.assign(value)
        trained.stop_training = False
        self.abandoned = False  # the epoch in progress cannot be made useful: stop without scoring it
        self.start_time, self.session_steps, self.epoch_steps = time.perf_counter(), 0, 0
        self.epoch_start, self.measure_from, self.session_from, self.trained_until = 0, 0.0, 0.0, 0.0

    def measure(self) -> None:
        """After a step: the epoch's and the session's step times; the first plan after this session's 4th step."""
        now = time.perf_counter()
        if self.epoch_steps == 1 and self.steps_per_epoch > 1:
            self.measure_from = now  # the epoch's step time without its first step (tracing, caches)
        if self.session_steps == 1:
            self.session_from = now
        elif self.session_steps == 4:
            self.step_s = (now - self.session_from) / 3
            left = self.time_s - (now - self.start_time)
            self.end_step = min(plan_steps(self.step, self.epoch_start, left, self.step_s, self.eval_s,
                                           self.steps_per_epoch, self.min_epoch_steps), self.max_steps)
            if self.end_step < self.step:
                self.abandoned = self.trained.stop_training = True
                return
            self.schedule.resize(self.end_step)

    def replan(self) -> None:
        """After a scored epoch: the plan again from its measured step and scoring times."""
        self.eval_s = time.perf_counter() - self.trained_until
        if self.epoch_steps > 1 or self.steps_per_epoch == 1:  # re-measured (a one-step epoch keeps the last)
            self.step_s = (self.trained_until - self.measure_from) / max(1, self.epoch_steps - 1)
        left = self.time_s - (time.perf_counter() - self.start_time)
        replanned = min(plan_steps(self.step, self.step, left, self.step_s, self.eval_s, self.steps_per_epoch,
                                   self.min_epoch_steps), self.max_steps)
        if replanned != self.end_step:
            self.end_step = replanned
            self.schedule.resize(self.end_step)

    def state(self) -> FineTuneState:
        """Where training stands, to continue from in another process."""
        return FineTuneState(self.epoch, self.step, -(-self.end_step // self.steps_per_epoch), self.step_s,
                             self.rng.bit_generator.state,
                             [keras.ops.convert_to_numpy(v) for v in self.trained.optimizer.variables], self.end_step)

    def result(self, stopped: bool, epochs_run: int, last_epoch_steps: int) -> FineTuneResult:
        planned = self.end_step if self.step_s else 0
        setup_s = round(self.session_from - self.call_time, 3) if self.session_steps else 0.0
        return FineTuneResult(-(-planned // self.steps_per_epoch), epochs_run, self.step_s, stopped, planned,
                              last_epoch_steps, setup_s)

    def train_step(self, views: list[np.ndarray], labels: np.ndarray, idx: np.ndarray,
                   augment: Callable[[np.ndarray, np.random.Generator], np.ndarray] | None) -> float:
        """One step on the samples ``idx`` (a view of each drawn, augmented, mixed as the recipe says); its loss."""
        batch, y = _batch(views, idx, self.rng), labels[idx]
        w = None if self.weights is None else self.weights[y]
        if augment is not None:
            batch = augment(batch, self.rng)
        if self.mixer.on:
            batch, y, w = self.mixer(batch, y, w, self.rng)  # soft labels
        if self.replicas:
            return self.replicas.step(batch, y, w)
        return float(self.trained.train_on_batch(batch, y, sample_weight=w))

    def run(self, views: list[np.ndarray], labels: np.ndarray, callbacks: keras.callbacks.CallbackList,
            augment: Callable[[np.ndarray, np.random.Generator], np.ndarray] | None) -> FineTuneResult:
        while self.step < self.end_step:
            self.epoch += 1
            self.epoch_start, self.epoch_steps, self.measure_from = self.step, 0, time.perf_counter()
            loss_sum = 0.0
            order = epoch_order(labels, self.rng, self.sampling)
            for start in range(0, self.n, self.batch_size):
                if self.step >= self.end_step:  # a last epoch shortened to fit
                    break
                loss_sum += self.train_step(views, labels, order[start : start + self.batch_size], augment)
                self.step, self.epoch_steps, self.session_steps = self.step + 1, self.epoch_steps + 1, \
                    self.session_steps + 1
                callbacks.on_train_batch_end(self.step)
                if self.abandoned:
                    return self.result(False, self.epoch - 1, 0)
                if self.trained.stop_training:  # the deadline: the unfinished epoch is not scored
                    return self.result(True, self.epoch - 1, 0)
            self.trained_until = time.perf_counter()
            if self.replicas:  # the epoch is scored on the scored model
                self.replicas.copy_back()
            callbacks.on_epoch_end(self.epoch - 1, {"step": self.step, "loss": loss_sum / max(1, self.epoch_steps)})
        return self.result(False, self.epoch, self.epoch_steps)


def fine_tune(
    model: keras.Model,
    views: list[np.ndarray],
    labels: np.ndarray,
    num_classes: int,
    time_s: float,
    eval_s: float,
    callbacks: list[keras.callbacks.Callback] = (),
    seed: int = 0,
    batch_size: int = 32,
    lr: float = FINETUNE_LR,
    max_epochs: int = 100,
    resume: FineTuneState | None = None,
    augment: Callable[[np.ndarray, np.random.Generator], np.ndarray] | None = None,
    recipe: Recipe = Recipe(),
    devices: list[str] = (),
) -> FineTuneResult:
    """Train ``model`` (activations -> probabilities) on ``views`` of the same samples.

    Epochs are planned so that training and the epochs' scoring (``eval_s`` each, until measured) fill ``time_s``,
    re-planned after every epoch from its measured duration (the learning-rate schedule is resized with the plan).
    ``callbacks`` are Keras callbacks: :class:`~timebox.train.callbacks.DeadlineStop` (checked after every batch),
    :class:`ScoreEpoch`, :class:`RecoveryState` (passing its state back as ``resume``, with the model's weights of
    that epoch loaded, continues from there: optimizer state, schedule position, shuffling and plan included).
    ``augment`` (training on images: :class:`timebox.train.augment.ImageAugment`) transforms every training batch
    (and images are then mixed by Keras' layers); ``recipe`` gives the loss, class weights, sampling, mixing and the
    learning rate's schedule. With ``devices`` (:func:`timebox.train.replicas.setup_devices`), a mirrored twin of
    ``model`` trains on them, ``batch_size`` and ``lr`` per replica (:mod:`timebox.train.replicas`).

    Example::

        fine_tune(model, views, y, 6, time_s=200, eval_s=2.0,
                  callbacks=[DeadlineStop(budget.expired), ScoreEpoch(keep_best), RecoveryState(save)])
    """
    loop = _Loop(model, labels, num_classes, time_s, eval_s, seed, batch_size, lr, max_epochs, resume, recipe,
                 images=augment is not None, devices=list(devices))
    after = [c for c in callbacks if isinstance(c, RecoveryState)]  # they save the epoch's plan
    plateau = [PlateauDecay(loop.schedule)] if recipe.lr_schedule == "plateau" else []
    ordered = [c for c in callbacks if not isinstance(c, RecoveryState)] + plateau + [_Plan(loop, bool(after))] + after
    return loop.run(views, labels, keras.callbacks.CallbackList(ordered, model=loop.trained), augment)
