"""Classifier heads on pooled features, and the full uint8-image -> probabilities model.

Example::

    head = build_head(1280, num_classes=6, spec=HeadSpec(kind="cosine", hidden=256))
    model = compose_classifier(extractor, head)   # saved and predicted from raw images
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
from keras import layers

from ..errors import UsageError


@dataclass(frozen=True)
class HeadSpec:
    """A head's shape (settings ``head``, ``head_dropout``, ``head_hidden``, ``cosine_scale``): ``kind`` softmax (a
    linear layer) or cosine (NormFace: normalised features and class weights, no bias, times a scale, learnt from
    ``cosine_scale`` or, with ``learn_scale`` False, fixed); ``hidden`` units of one ReLU layer before it (0: none)."""

    kind: str = "softmax"
    dropout: float = 0.3
    hidden: int = 0
    cosine_scale: float = 16.0
    learn_scale: bool = True


@keras.saving.register_keras_serializable(package="timebox")
class CosineDense(layers.Layer):
    """NormFace's classifier layer (Wang et al. 2017): ``scale * normalise(x) @ normalise(kernel)``, no bias.

    >>> CosineDense(3)(np.ones((2, 4), "float32")).shape
    (2, 3)
    """

    def __init__(self, units: int, scale: float = 16.0, learn_scale: bool = True, seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.units, self.scale_init, self.learn_scale, self.seed = int(units), float(scale), bool(learn_scale), seed

    def build(self, input_shape):
        self.kernel = self.add_weight((input_shape[-1], self.units), name="kernel",
                                      initializer=keras.initializers.GlorotUniform(seed=self.seed))
        self.scale = self.add_weight((), name="scale", initializer=keras.initializers.Constant(self.scale_init),
                                     trainable=self.learn_scale)

    def call(self, x):
        x = x / keras.ops.sqrt(keras.ops.sum(keras.ops.square(x), axis=-1, keepdims=True) + 1e-12)
        w = self.kernel / keras.ops.sqrt(keras.ops.sum(keras.ops.square(self.kernel), axis=0, keepdims=True) + 1e-12)
        return self.scale * keras.ops.matmul(x, w)

    def get_config(self) -> dict:
        return {**super().get_config(), "units": self.units, "scale": self.scale_init,
                "learn_scale": self.learn_scale, "seed": self.seed}


def build_head(num_features: int, num_classes: int, dropout: float = 0.2, l2: float = 1e-4, seed: int = 0,
               spec: HeadSpec | None = None) -> keras.Model:
    """Dropout (+ a hidden ReLU layer) + the class layer: features -> class probabilities. ``spec`` (when given)
    sets the kind, dropout and hidden layer; the class layer is named ``head_dense`` either way."""
    spec = spec or HeadSpec(dropout=dropout)
    inputs = keras.Input((num_features,), name="features")
    x = layers.Dropout(spec.dropout, seed=seed, name="head_dropout")(inputs)
    if spec.hidden:
        x = layers.Dense(spec.hidden, activation="relu", kernel_initializer=keras.initializers.HeUniform(seed=seed),
                         name="head_hidden")(x)
        x = layers.Dropout(spec.dropout, seed=seed + 1, name="head_hidden_dropout")(x)
    if spec.kind == "cosine":
        logits = CosineDense(num_classes, spec.cosine_scale, spec.learn_scale, seed=seed, name="head_dense")(x)
        outputs = layers.Softmax(name="head_softmax")(logits)
    else:
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
    kind: str = "softmax"  # the pretrained head's (HeadSpec.kind): rows carry over only to a head of its kind

    def apply(self, dense: keras.layers.Layer) -> None:
        """Set ``dense``'s rows of the matched classes (the others keep their fresh initialisation); a cosine
        layer takes the kernel's rows (it has no bias)."""
        weights = dense.get_weights()
        weights[0][:, self.matched] = self.kernel[:, self.matched]
        if isinstance(dense, keras.layers.Dense):
            weights[1][self.matched] = self.bias[self.matched]
        dense.set_weights(weights)


def transfer_rows(head_file: Path, pretrained: list[str], classes: list[str], num_features: int,
                  kind: str = "softmax") -> HeadRows:
    """The rows of the head saved in ``head_file`` (a head of ``kind`` without a hidden layer, trained on the classes
    ``pretrained``) for ``classes``, matched by name: reordered, missing ones dropped, new ones left at zero."""
    head = build_head(num_features, len(pretrained), spec=HeadSpec(kind))
    try:
        with warnings.catch_warnings():  # Keras warns of each layer it cannot match before it raises
            warnings.simplefilter("ignore", UserWarning)
            head.load_weights(str(head_file))
    except ValueError as e:
        raise UsageError(f"{head_file}: not a {kind} head without a hidden layer ({str(e).splitlines()[0]}); "
                         "only such a head's rows "
                         "carry over: pretrain with head_hidden=0, or start with --init imagenet") \
            from None
    source_kernel, *rest = head.get_layer("head_dense").get_weights()
    source_bias = rest[0] if kind == "softmax" else np.zeros(len(pretrained), np.float32)  # cosine: scale, no bias
    kernel = np.zeros((num_features, len(classes)), np.float32)
    bias, matched = np.zeros(len(classes), np.float32), np.zeros(len(classes), bool)
    where = {name: i for i, name in enumerate(pretrained)}
    for j, name in enumerate(classes):
        if name in where:
            kernel[:, j], bias[j], matched[j] = source_kernel[:, where[name]], source_bias[where[name]], True
    return HeadRows(kernel, bias, matched, kind)
