"""The learning-rate schedules of the head and of fine-tuning (setting ``lr_schedule``), one class for both:
a linear warm-up from 10% to ``peak``, then

- ``cosine``: cosine to zero at ``total_steps`` (the default);
- ``step``: ``peak``, divided by 10 at half and again at three quarters of the steps after the warm-up;
- ``plateau``: ``peak`` times a factor that :class:`timebox.train.callbacks.PlateauDecay` lowers when val accuracy
  stops improving.

``resize(total_steps)`` moves the end while training, so that when the plan changes (more or fewer epochs fit
than first measured) training still ends annealed instead of cut mid-curve.

It lives with the models: a saved model keeps its compile configuration, so loading one registers this class
(:func:`timebox.models.registry.load_model`), as it does the losses.

Example::

    schedule = WarmupCosine(3e-4, warmup_steps=30, total_steps=600, shape="step")
    model.compile(keras.optimizers.AdamW(schedule), loss=...)
"""

from __future__ import annotations

import keras
import numpy as np

SHAPES = ("cosine", "step", "plateau")
STEP_DROPS = (0.5, 0.75)  # where ``step`` divides by 10, as shares of the steps after the warm-up


@keras.saving.register_keras_serializable(package="timebox")
class WarmupCosine(keras.optimizers.schedules.LearningRateSchedule):
    """Warm-up, then the decay ``shape`` (one of :data:`SHAPES`) to ``total_steps``."""

    def __init__(self, peak: float, warmup_steps: int, total_steps: int, shape: str = "cosine"):
        if shape not in SHAPES:
            raise ValueError(f"lr schedule {shape!r}: one of {', '.join(SHAPES)}")
        self.peak, self.warmup_steps, self.shape = float(peak), int(warmup_steps), shape
        self.total_steps = keras.Variable(float(total_steps), dtype="float32", trainable=False, name="lr_total_steps")
        self.factor = keras.Variable(1.0, dtype="float32", trainable=False, name="lr_factor")  # plateau's

    def resize(self, total_steps: int) -> None:
        self.total_steps.assign(float(total_steps))

    def __call__(self, step):
        step = keras.ops.cast(step, "float32")
        warm = self.peak * (0.1 + 0.9 * step / self.warmup_steps)
        span = keras.ops.maximum(1.0, self.total_steps - self.warmup_steps)
        progress = keras.ops.clip((step - self.warmup_steps) / span, 0.0, 1.0)
        if self.shape == "cosine":
            after = 0.5 * self.peak * (1.0 + keras.ops.cos(np.pi * progress))
        elif self.shape == "step":
            drops = sum(keras.ops.cast(progress >= d, "float32") for d in STEP_DROPS)
            after = self.peak * keras.ops.power(0.1, drops)
        else:
            after = self.peak * self.factor
        return keras.ops.where(step < self.warmup_steps, warm, after)

    def get_config(self) -> dict:
        return {"peak": self.peak, "warmup_steps": self.warmup_steps, "shape": self.shape,
                "total_steps": float(keras.ops.convert_to_numpy(self.total_steps))}
