"""The loss follows the labels: sparse categorical for ids, categorical for one-hot or soft labels.

Binary cross-entropy on a multi-class problem is refused: the garbage contest's official
baseline shipped exactly that and reported 0.99 "accuracy" for a 0.65 model.
"""

from __future__ import annotations

import keras
import numpy as np

from ..errors import UsageError

FOCAL_GAMMA = 2.0  # Lin et al. 2017


def select_loss(labels: np.ndarray, num_classes: int, requested: str | None = None, label_smoothing: float = 0.0) -> keras.losses.Loss:
    """Pick the cross-entropy that matches ``labels`` (ids: 1-D ints; one-hot/soft: 2-D floats)."""
    if requested and "binary" in requested.lower() and num_classes > 2:
        raise UsageError(
            f"loss {requested!r} is binary cross-entropy, but there are {num_classes} classes: it would "
            "score each class independently and report a meaningless accuracy. Use categorical "
            "cross-entropy (the default) instead."
        )
    labels = np.asarray(labels)
    if labels.ndim == 1:
        if label_smoothing:
            return SmoothedSparse(num_classes, label_smoothing)
        return keras.losses.SparseCategoricalCrossentropy()
    if labels.ndim == 2 and labels.shape[1] == num_classes:
        return keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing)
    raise UsageError(f"labels of shape {labels.shape} fit neither class ids nor {num_classes}-class one-hot/soft labels")


@keras.saving.register_keras_serializable(package="timebox", name="_SmoothedSparse")  # the name saved models carry
class SmoothedSparse(keras.losses.Loss):
    """Sparse categorical cross-entropy with label smoothing (ids one-hot encoded on the fly), plus, with ``costs``
    (a (k, k) matrix, rows the true class: :mod:`timebox.train.costs`), ``-sum_j costs[true, j] * log(1 - p_j)``."""

    def __init__(self, num_classes: int, label_smoothing: float, name: str = "smoothed_sparse_categorical_crossentropy",
                 costs: list[list[float]] | None = None, **kwargs):
        super().__init__(name=name, **kwargs)
        self.num_classes, self.label_smoothing = num_classes, label_smoothing
        self.costs = None if costs is None else [[float(c) for c in row] for row in costs]

    def get_config(self) -> dict:
        return {**super().get_config(), "num_classes": self.num_classes, "label_smoothing": self.label_smoothing,
                "costs": self.costs}

    def call(self, y_true, y_pred):
        y_true = keras.ops.one_hot(keras.ops.reshape(keras.ops.cast(y_true, "int32"), (-1,)), self.num_classes)
        loss = self.per_sample(y_true, y_pred)
        if self.costs is not None:
            row = keras.ops.matmul(y_true, keras.ops.convert_to_tensor(self.costs, dtype=y_pred.dtype))
            loss = loss - keras.ops.sum(row * keras.ops.log(keras.ops.maximum(1.0 - y_pred, 1e-7)), axis=-1)
        return loss

    def per_sample(self, y_true, y_pred):
        """The loss of each sample, from one-hot ``y_true``."""
        return keras.losses.categorical_crossentropy(y_true, y_pred, label_smoothing=self.label_smoothing)


@keras.saving.register_keras_serializable(package="timebox")
class SparseFocal(SmoothedSparse):
    """Categorical focal cross-entropy (gamma 2, no alpha) on class ids, with label smoothing."""

    def __init__(self, num_classes: int, label_smoothing: float = 0.0, name: str = "sparse_focal",
                 costs: list[list[float]] | None = None, **kwargs):
        super().__init__(num_classes, label_smoothing, name=name, costs=costs, **kwargs)

    def per_sample(self, y_true, y_pred):
        return keras.losses.categorical_focal_crossentropy(y_true, y_pred, alpha=1.0, gamma=FOCAL_GAMMA,
                                                           label_smoothing=self.label_smoothing)
