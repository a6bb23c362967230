"""The models the phases train and export, composed from the extractor and the head."""

from __future__ import annotations

import keras

from ..models.ensemble_model import VIEWS, compose_ensemble, member_copy
from ..models.heads import compose_classifier
from ..models.registry import Extractor


def scored_model(extractor: Extractor, head: keras.Model, activation_shape: tuple[int, ...]) -> keras.Model:
    """What is trained and scored on the cached activations: the top after the cut and the head (the head alone when
    the backbone is not split). It shares its layers with ``extractor.full``."""
    if extractor.top is None:
        return head
    a = keras.Input(activation_shape)
    return keras.Model(a, head(extractor.top(a)), name="top_and_head")


def single_model(extractor: Extractor, head: keras.Model, scored: keras.Model, n_views: int) -> keras.Model:
    """The uint8-image classifier of the scored model on its test-time views (one, or the original and mirrored
    averaged)."""
    if n_views == 1:
        return compose_classifier(extractor.full, head)
    return compose_ensemble(extractor.bottom, [member_copy(scored, "member_0")] * 2, VIEWS[:2], [0.5, 0.5])
