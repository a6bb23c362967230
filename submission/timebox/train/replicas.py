"""Data-parallel fine-tuning on several devices (setting ``replicas``), with ``tf.distribute.MirroredStrategy``.

The fine-tune trains a mirrored twin of the scored model (cloned in the strategy's scope, the scored model's
weights copied in) and copies the twin's weights back after every epoch, before the epoch is scored: everything
else of a run (scoring, checkpoints, predictions, export) stays on one device, as without replicas. Each step
splits its batch between the replicas; Keras sums their gradients, each replica's loss divided by the replica
count, so a step is the step of the whole batch. The global batch and the learning rate are the settings' times
the replicas (the linear scaling rule).

Several machines are not supported: ``MultiWorkerMirroredStrategy`` is broken with Keras 3 (keras-team/keras#20585);
``tune``'s shared study spreads work over machines instead. The JAX backend has its own data parallelism
(``keras.distribution.DataParallel``), not wired in: ``replicas`` above 1 needs TensorFlow.

Example::

    devices = setup_devices(2)          # before TensorFlow starts: two GPUs, or the CPU split in two
    twin = Replicas(devices, scored)    # then twin.model trains, twin.step(x, y, w), twin.copy_back()
"""

from __future__ import annotations

import keras
import numpy as np

from ..errors import UsageError


def setup_devices(replicas: int) -> list[str]:
    """The devices of ``replicas`` replicas (0: every GPU when there are several); an empty list: one device, no
    strategy. With no GPU, the CPU is split into that many logical devices (tests), which must happen before
    TensorFlow starts."""
    if replicas == 1 or keras.backend.backend() != "tensorflow":
        if replicas > 1:
            raise UsageError(f"replicas {replicas} needs the TensorFlow backend (KERAS_BACKEND is "
                             f"{keras.backend.backend()}); set replicas to 1")
        return []
    import tensorflow as tf

    gpus = [d.name.replace("physical_device:", "") for d in tf.config.list_physical_devices("GPU")]
    if replicas == 0:
        return [f"/gpu:{i}" for i in range(len(gpus))] if len(gpus) > 1 else []
    if gpus:
        if len(gpus) < replicas:
            raise UsageError(f"replicas {replicas}: this machine has {len(gpus)} GPU(s); set replicas to at most "
                             f"{len(gpus)} (0: all of them)")
        return [f"/gpu:{i}" for i in range(replicas)]
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * replicas)
    except RuntimeError as exc:
        if len(tf.config.list_logical_devices("CPU")) != replicas:
            raise UsageError(f"replicas {replicas}: no GPU, and the CPU cannot be split into {replicas} logical "
                             "devices once TensorFlow has started; run in a fresh process") from exc
    return [f"/cpu:{i}" for i in range(replicas)]


class Replicas:
    """A mirrored twin of ``model`` on ``devices``: compile and train ``self.model``, :meth:`step` on a batch,
    :meth:`copy_back` its weights into ``model``."""

    def __init__(self, devices: list[str], model: keras.Model):
        import tensorflow as tf

        self.strategy = tf.distribute.MirroredStrategy(devices)
        self.source, self.count = model, len(devices)
        with self.strategy.scope():
            self.model = keras.models.clone_model(model)
        self.model.set_weights(model.get_weights())
        self._traced = False

    def scope(self):
        """The strategy's scope: compile and build the twin's optimizer in it."""
        return self.strategy.scope()

    def step(self, x: np.ndarray, y: np.ndarray, w: np.ndarray | None) -> float:
        """One training step of the twin on the batch, split between the replicas; its loss."""
        if not self._traced or len(x) < self.count:  # the first step builds the optimizer: the whole batch on each
            self._traced = True
            return float(self.model.train_on_batch(x, y, sample_weight=w))
        self.model.reset_metrics()
        logs = self.model.train_function(iter([self.split(x, y, w)]))
        return float(keras.ops.convert_to_numpy(logs["loss"]))

    def split(self, x: np.ndarray, y: np.ndarray, w: np.ndarray | None):
        """The batch as per-replica values: consecutive, near-equal parts."""
        parts = np.array_split(np.arange(len(x)), self.count)

        def part(context) -> tuple:
            i = parts[context.replica_id_in_sync_group]
            return (x[i], y[i]) if w is None else (x[i], y[i], w[i])

        return self.strategy.experimental_distribute_values_from_function(part)

    def copy_back(self) -> None:
        """The twin's weights into the model it was cloned from."""
        self.source.set_weights(self.model.get_weights())
