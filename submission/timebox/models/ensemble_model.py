"""One Keras model for a whole ensemble: raw uint8 images in, the weighted vote of its members out.

The frozen bottom of the backbone runs once per test-time :class:`View` that a member uses (the
image, its mirror, a zoom on its centre, ...); every member (a checkpoint of the trainable top and head) reads the activations
of its view (a member may read another bottom: a second backbone's pooled features); a :class:`WeightedVote` layer combines their probabilities with the weights fitted on
validation (optionally scaled per image by each member's confidence). Saved as one ``.keras`` file,
it loads in a fresh process with :func:`timebox.models.registry.load_model`.

Example::

    model = compose_ensemble(extractor.bottom, [top_a, top_b], views=[VIEWS[0], VIEWS[1]], weights=[0.6, 0.4])
    model.save("model.keras")
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import keras
from keras import layers, ops


@keras.saving.register_keras_serializable(package="timebox")
class HorizontalFlip(layers.Layer):
    """Mirror images left-right (the test-time view the mirrored training views match)."""

    def call(self, images):
        return ops.flip(images, axis=2)


@keras.saving.register_keras_serializable(package="timebox")
class CenterZoom(layers.Layer):
    """Keep ``fraction`` of each image's height and width, placed at ``anchor`` (the share of the room left
    above and to the left: 0.5, 0.5 the centre, 0, 0 the top-left corner), and resize it back to full size
    (bilinear; uint8 in, uint8 out): the same picture seen at a larger scale."""

    def __init__(self, fraction: float, anchor: tuple[float, float] = (0.5, 0.5), **kwargs):
        super().__init__(**kwargs)
        if not 0.0 < fraction <= 1.0:
            raise ValueError(f"CenterZoom fraction must be in (0, 1], got {fraction}")
        self.fraction, self.anchor = float(fraction), (float(anchor[0]), float(anchor[1]))

    def call(self, images):
        h, w = images.shape[1], images.shape[2]
        ch, cw = max(1, round(h * self.fraction)), max(1, round(w * self.fraction))
        top, left = int((h - ch) * self.anchor[0]), int((w - cw) * self.anchor[1])
        crop = ops.cast(images[:, top : top + ch, left : left + cw, :], "float32")
        resized = ops.image.resize(crop, (h, w), interpolation="bilinear", data_format="channels_last")
        return ops.cast(ops.clip(ops.round(resized), 0, 255), images.dtype)

    def get_config(self) -> dict:
        return {**super().get_config(), "fraction": self.fraction, "anchor": list(self.anchor)}


@dataclass(frozen=True)
class View:
    """A test-time view of an image: optionally zoomed (``zoom``: the fraction kept) on its centre or on the place
    ``anchor`` says (a crop: see :class:`CenterZoom`), then mirrored."""

    name: str
    mirror: bool = False
    zoom: float = 1.0
    anchor: tuple[float, float] = (0.5, 0.5)

    def __call__(self, images):
        """The view of a batch of uint8 images (symbolic or eager), through Keras layers."""
        slug = self.name.replace(" ", "_").replace("-", "_")
        if self.zoom < 1.0:
            images = CenterZoom(self.zoom, self.anchor, name=f"{slug}_zoom")(images)
        if self.mirror:
            images = HorizontalFlip(name=f"{slug}_mirror")(images)
        return images


ZOOM = 0.8  # the zoomed views keep the central 80% of each side (the object at 1.25x)
CORNERS = {"top-left": (0.0, 0.0), "top-right": (0.0, 1.0), "bottom-left": (1.0, 0.0), "bottom-right": (1.0, 1.0)}
VIEWS = (View("original"), View("mirrored", mirror=True), View("zoomed", zoom=ZOOM),
         View("zoomed mirrored", mirror=True, zoom=ZOOM),
         *(View(f"crop {corner}", zoom=ZOOM, anchor=at) for corner, at in CORNERS.items())
         )  # by index: 0 and 1 are cached during extraction; the crops (setting tta_crops) follow the zoomed ones


def view_model(bottom: keras.Model, view: View) -> keras.Model:
    """uint8 image -> the bottom's activations of ``view`` of it (what a member on that view reads)."""
    inputs = keras.Input(bottom.input_shape[1:], dtype="uint8", name="image")
    return keras.Model(inputs, bottom(view(inputs)), name=f"bottom_{view.name.replace(' ', '_')}")


@keras.saving.register_keras_serializable(package="timebox")
class WeightedVote(layers.Layer):
    """Soft vote of member probabilities with fixed weights; with ``confidence``, each member's vote on an
    image is also scaled by its confidence there (its top probability). Rows of the output sum to 1."""

    def __init__(self, member_weights: Sequence[float], confidence: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.member_weights = [float(w) for w in member_weights]
        self.confidence = bool(confidence)

    def call(self, inputs):
        probs = ops.stack([ops.cast(p, "float32") for p in inputs], axis=0)  # (members, batch, classes)
        weights = ops.reshape(ops.convert_to_tensor(self.member_weights, "float32"), (-1, 1, 1))
        if self.confidence:
            weights = weights * ops.max(probs, axis=-1, keepdims=True)
        votes = ops.sum(weights * probs, axis=0)
        return votes / ops.maximum(ops.sum(votes, axis=-1, keepdims=True), 1e-12)

    def get_config(self) -> dict:
        return {**super().get_config(), "member_weights": self.member_weights, "confidence": self.confidence}


def compose_ensemble(bottom: keras.Model, members: Sequence[keras.Model], views: Sequence[View],
                     weights: Sequence[float], confidence: bool = False,
                     bottoms: Sequence[keras.Model | None] | None = None) -> keras.Model:
    """uint8 image -> probabilities: member ``i`` (activations -> probabilities) on ``views[i]``, combined
    by :class:`WeightedVote`; each bottom runs once per distinct view. Member ``i`` reads ``bottoms[i]`` (another
    backbone's, say) where given and not None, else ``bottom``. Members must have distinct names."""
    bottoms = list(bottoms) if bottoms is not None else [None] * len(members)
    if not (len(members) == len(views) == len(weights) == len(bottoms)) or not members:
        raise ValueError(f"members, views, weights and bottoms differ in length or are empty: "
                         f"{len(members)}, {len(views)}, {len(weights)}, {len(bottoms)}")
    bottoms = [b if b is not None else bottom for b in bottoms]
    inputs = keras.Input(bottom.input_shape[1:], dtype="uint8", name="image")
    activations = {(id(b), view): b(view(inputs)) for b, view in dict.fromkeys(zip(bottoms, views))}
    outputs = [member(activations[id(b), view]) for member, b, view in zip(members, bottoms, views)]
    if len(outputs) == 1:
        return keras.Model(inputs, outputs[0], name="classifier")
    return keras.Model(inputs, WeightedVote(weights, confidence, name="vote")(outputs), name="ensemble")


def member_copy(model: keras.Model, name: str, weights_path: str | None = None) -> keras.Model:
    """An uncompiled copy of ``model`` (same architecture, own variables) named ``name``, with the weights of the
    checkpoint ``weights_path`` (default: ``model``'s current weights)."""
    copy = model.__class__.from_config(model.get_config())  # not clone_model: it copies the compile config too
    if weights_path is None:
        copy.set_weights(model.get_weights())
    else:
        copy.load_weights(weights_path)
    inputs = keras.Input(model.input_shape[1:], name=f"{name}_activations")
    return keras.Model(inputs, copy(inputs), name=name)
