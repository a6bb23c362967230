"""Input scaling as a layer, so a saved model predicts from raw uint8 RGB images.

Example::

    x = keras.Input((224, 224, 3), dtype="uint8")
    y = Preprocess("lite")(x)        # (x - 127) / 128, float32
"""

from __future__ import annotations

import keras
from keras import ops

# mode: (per-channel scale, per-channel offset, reverse RGB to BGR first)
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
MODES = {
    "raw": ((1.0, 1.0, 1.0), (0.0, 0.0, 0.0), False),
    "tf": ((1 / 127.5,) * 3, (-1.0,) * 3, False),
    "lite": ((1 / 128,) * 3, (-127 / 128,) * 3, False),
    "torch": (
        tuple(1 / (255 * s) for s in _IMAGENET_STD),
        tuple(-m / s for m, s in zip(_IMAGENET_MEAN, _IMAGENET_STD)),
        False,
    ),
    "caffe": ((1.0, 1.0, 1.0), (-103.939, -116.779, -123.68), True),
}


@keras.saving.register_keras_serializable(package="timebox")
class Preprocess(keras.layers.Layer):
    """Casts uint8 RGB to float32 and applies one of :data:`MODES` (a backbone's own scaling)."""

    def __init__(self, mode: str, **kwargs):
        super().__init__(**kwargs)
        if mode not in MODES:
            raise ValueError(f"unknown preprocessing mode {mode!r}; choose one of {sorted(MODES)}")
        self.mode = mode

    def call(self, inputs):
        scale, offset, bgr = MODES[self.mode]
        x = ops.cast(inputs, "float32")
        if bgr:
            x = ops.flip(x, axis=-1)
        return x * ops.convert_to_tensor(scale, "float32") + ops.convert_to_tensor(offset, "float32")

    def get_config(self) -> dict:
        return {**super().get_config(), "mode": self.mode}
