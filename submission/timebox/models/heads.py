"""Classifier heads on pooled features, and the full uint8-image -> probabilities model.

Example::

    head = build_head(1280, num_classes=6)
    model = compose_classifier(extractor, head)   # saved and predicted from raw images
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
from keras import layers


def build_head(num_features: int, num_classes: int, dropout: float = 0.2, l2: float = 1e-4, seed: int = 0) -> keras.Model:
    """Dropout + linear softmax layer: features -> class probabilities."""
    inputs = keras.Input((num_features,), name="features")
    x = layers.Dropout(dropout, seed=seed, name="head_dropout")(inputs)
    outputs = layers.Dense(
        num_classes,
        activation="softmax",
        kernel_regularizer=keras.regularizers.L2(l2) if l2 else None,
        kernel_initializer=keras.initializers.GlorotUniform(seed=seed),
        name="head_dense",
    )(x)
    return keras.Model(inputs, outputs, name="head")


def compose_classifier(extractor: keras.Model, head: keras.Model) -> keras.Model:
    """One model from raw uint8 images to probabilities: ``head(extractor(image))``."""
    inputs = keras.Input(extractor.input_shape[1:], dtype="uint8", name="image")
    return keras.Model(inputs, head(extractor(inputs)), name="classifier")


@dataclass
class HeadRows:
    """A pretrained head's weights laid out for this run's classes: ``kernel`` (features, classes) and ``bias``
    where ``matched`` (a class of the same name was pretrained); elsewhere zeros, for the fitter's own start."""

    kernel: np.ndarray
    bias: np.ndarray
    matched: np.ndarray

    def apply(self, dense: keras.layers.Dense) -> None:
        """Set ``dense``'s rows of the matched classes (the others keep their fresh initialisation)."""
        kernel, bias = dense.get_weights()
        kernel[:, self.matched], bias[self.matched] = self.kernel[:, self.matched], self.bias[self.matched]
        dense.set_weights([kernel, bias])


def transfer_rows(head_file: Path, pretrained: list[str], classes: list[str], num_features: int) -> HeadRows:
    """The rows of the head saved in ``head_file`` (trained on the classes ``pretrained``) for ``classes``,
    matched by name: reordered, missing ones dropped, new ones left at zero."""
    head = build_head(num_features, len(pretrained))
    head.load_weights(str(head_file))
    source_kernel, source_bias = head.get_layer("head_dense").get_weights()
    kernel = np.zeros((num_features, len(classes)), np.float32)
    bias, matched = np.zeros(len(classes), np.float32), np.zeros(len(classes), bool)
    where = {name: i for i, name in enumerate(pretrained)}
    for j, name in enumerate(classes):
        if name in where:
            kernel[:, j], bias[j], matched[j] = source_kernel[:, where[name]], source_bias[where[name]], True
    return HeadRows(kernel, bias, matched)
