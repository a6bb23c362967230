"""The accelerators (GPUs, TPUs) the Keras backend can use; none means everything runs on the CPU.

Example::

    if not accelerators():
        batch = 8   # a CPU-friendly batch
"""

from __future__ import annotations

from functools import cache

import keras


@cache
def accelerators() -> tuple[str, ...]:
    """The non-CPU devices of the current Keras backend, as strings (empty on a CPU-only machine)."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return tuple(str(d) for d in tf.config.list_physical_devices("GPU"))
    if backend == "jax":
        import jax

        return tuple(str(d) for d in jax.devices() if d.platform != "cpu")
    return ()
