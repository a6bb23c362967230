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


@dataclass
class FineTuneResult:
    epochs_planned: int
    epochs_run: int
    step_time_s: float
    stopped_by_deadline: bool


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
) -> FineTuneResult:
    """Train ``model`` (activations -> probabilities) on ``views`` of the same samples.

    ``eval_s`` is the caller's cost of ``on_epoch(epoch, step)``; epochs are planned so that
    training plus evaluation fill ``time_s``; ``expired()`` is checked after every batch.
    """
    n = len(labels)
    steps_per_epoch = int(np.ceil(n / batch_size))
    rng = np.random.default_rng(seed)
    loss = select_loss(labels, num_classes, label_smoothing=0.1)

    probe = _batch(views, np.arange(min(batch_size, n)), rng)
    model.compile(optimizer=keras.optimizers.AdamW(0.0), loss=loss)
    model.train_on_batch(probe, labels[: len(probe)])  # tracing, not timed
    t0 = time.perf_counter()
    for _ in range(3):
        model.train_on_batch(probe, labels[: len(probe)])
    step_s = (time.perf_counter() - t0) / 3
    epochs = int(np.clip(time_s // (steps_per_epoch * step_s + eval_s), 0, max_epochs))
    if epochs == 0:
        return FineTuneResult(0, 0, step_s, False)

    total = epochs * steps_per_epoch
    warmup = steps_per_epoch // 2 + 1
    schedule = keras.optimizers.schedules.CosineDecay(
        lr * 0.1, decay_steps=max(1, total - warmup), warmup_target=lr, warmup_steps=warmup
    )
    # a fresh optimizer: the probe steps above ran at learning rate 0 and are forgotten
    model.compile(optimizer=keras.optimizers.AdamW(schedule, weight_decay=1e-4), loss=loss)
    step = 0
    for epoch in range(1, epochs + 1):
        order = rng.permutation(n)
        for start in range(0, n, batch_size):
            idx = order[start : start + batch_size]
            model.train_on_batch(_batch(views, idx, rng), labels[idx])
            step += 1
            if expired():  # the unfinished epoch is not scored: the best checkpoint stands
                return FineTuneResult(epochs, epoch - 1, step_s, True)
        on_epoch(epoch, step)
    return FineTuneResult(epochs, epochs, step_s, False)
