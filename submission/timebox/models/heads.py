"""Classifier heads on pooled features, and the full uint8-image -> probabilities model.

Example::

    head = build_head(1280, num_classes=6)
    model = compose_classifier(extractor, head)   # saved and predicted from raw images
"""

from __future__ import annotations

import keras
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
