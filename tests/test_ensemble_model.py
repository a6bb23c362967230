"""The single Keras model of an ensemble: WeightedVote computes exactly timebox.ensemble.vote, the mirrored
view is the member run on the flipped image, the zoomed view on the resized centre crop, and the saved
model loads back (custom layers registered) giving the same probabilities."""

import keras
import numpy as np
import pytest

from timebox.ensemble import vote
from timebox.models.ensemble_model import VIEWS, CenterZoom, View, WeightedVote, compose_ensemble, member_copy, view_model
from timebox.models.registry import load_model

SIZE, CLASSES = 8, 3


def _bottom():
    inputs = keras.Input((SIZE, SIZE, 3), dtype="uint8")
    x = keras.layers.Rescaling(1 / 255)(inputs)
    return keras.Model(inputs, keras.layers.Conv2D(4, 3, padding="same", name="conv")(x), name="bottom")


def _member(seed, name):
    keras.utils.set_random_seed(seed)
    a = keras.Input((SIZE, SIZE, 4))
    x = keras.layers.Flatten()(a)  # position-sensitive: a mirrored view gives other probabilities
    return keras.Model(a, keras.layers.Dense(CLASSES, activation="softmax")(x), name=name)


@pytest.mark.parametrize("confidence", [False, True])
def test_weighted_vote_layer_equals_the_numpy_vote(confidence):
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(CLASSES), size=(3, 5)).astype(np.float32)
    weights = [0.5, 0.2, 0.3]
    got = keras.ops.convert_to_numpy(WeightedVote(weights, confidence)([probs[0], probs[1], probs[2]]))
    np.testing.assert_allclose(got, vote(probs, np.array(weights), confidence), rtol=1e-5, atol=1e-6)


def test_the_ensemble_model_votes_over_members_and_views_and_survives_saving(tmp_path):
    bottom = _bottom()
    a, b = _member(1, "a"), _member(2, "b")
    images = np.random.default_rng(1).integers(0, 256, (6, SIZE, SIZE, 3), dtype=np.uint8)
    acts = keras.ops.convert_to_numpy(bottom(images))
    acts_flipped = keras.ops.convert_to_numpy(bottom(images[:, :, ::-1]))
    expected = vote(np.stack([keras.ops.convert_to_numpy(a(acts)), keras.ops.convert_to_numpy(b(acts)),
                              keras.ops.convert_to_numpy(a(acts_flipped))]), np.array([0.5, 0.3, 0.2]), True)

    model = compose_ensemble(bottom, [a, b, a], [VIEWS[0], VIEWS[0], VIEWS[1]], [0.5, 0.3, 0.2], confidence=True)
    np.testing.assert_allclose(model.predict_on_batch(images), expected, rtol=1e-5, atol=1e-6)
    model.save(tmp_path / "ensemble.keras")
    loaded = load_model(tmp_path / "ensemble.keras")
    np.testing.assert_allclose(loaded.predict_on_batch(images), expected, rtol=1e-5, atol=1e-6)


def test_a_member_of_another_backbone_reads_its_own_bottom_and_survives_saving(tmp_path):
    bottom, a = _bottom(), _member(1, "a")
    inputs = keras.Input((SIZE, SIZE, 3), dtype="uint8")  # a second backbone: image -> pooled features
    pooled = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(5, 3, name="conv2")(
        keras.layers.Rescaling(1 / 255)(inputs)))
    other = keras.Model(inputs, pooled, name="other_backbone")
    head_in = keras.Input((5,))
    head = keras.Model(head_in, keras.layers.Dense(CLASSES, activation="softmax")(head_in), name="other_head")
    images = np.random.default_rng(3).integers(0, 256, (4, SIZE, SIZE, 3), dtype=np.uint8)
    expected = vote(np.stack([keras.ops.convert_to_numpy(a(bottom(images))),
                              keras.ops.convert_to_numpy(head(other(images)))]), np.array([0.6, 0.4]))

    model = compose_ensemble(bottom, [a, head], [VIEWS[0], VIEWS[0]], [0.6, 0.4], bottoms=[None, other])
    np.testing.assert_allclose(model.predict_on_batch(images), expected, rtol=1e-5, atol=1e-6)
    model.save(tmp_path / "two_backbones.keras")
    loaded = load_model(tmp_path / "two_backbones.keras")
    np.testing.assert_allclose(loaded.predict_on_batch(images), expected, rtol=1e-5, atol=1e-6)


def test_one_member_is_a_plain_classifier():
    bottom, a = _bottom(), _member(1, "a")
    model = compose_ensemble(bottom, [a], [VIEWS[0]], [1.0])
    assert not any(isinstance(layer, WeightedVote) for layer in model.layers)


def test_member_copy_has_the_checkpoint_weights_and_its_own_variables(tmp_path):
    source = _member(1, "a")
    source.save_weights(str(tmp_path / "a.weights.h5"))
    copy = member_copy(source, "member_0", str(tmp_path / "a.weights.h5"))
    x = np.random.default_rng(2).normal(size=(2, SIZE, SIZE, 4)).astype(np.float32)
    np.testing.assert_allclose(copy.predict_on_batch(x), source.predict_on_batch(x), rtol=1e-6)
    source.set_weights([w * 0 for w in source.get_weights()])  # the copy does not share variables
    assert not np.allclose(copy.predict_on_batch(x), source.predict_on_batch(x))
    assert copy.name == "member_0"


def test_mismatched_lengths_are_refused():
    with pytest.raises(ValueError, match="differ in length"):
        compose_ensemble(_bottom(), [_member(1, "a")], VIEWS[:2], [1.0])


def test_member_copy_of_a_compiled_model_saves_and_loads_without_its_optimizer(tmp_path):
    """A fine-tuned model is compiled with timebox's schedule: the exported copy must not carry it."""
    source = _member(1, "a")
    source.compile(optimizer=keras.optimizers.AdamW(1e-3), loss="sparse_categorical_crossentropy")
    bottom = _bottom()
    model = compose_ensemble(bottom, [member_copy(source, "member_0")] * 2, VIEWS[:2], [0.5, 0.5])
    model.save(tmp_path / "m.keras")
    images = np.random.default_rng(3).integers(0, 256, (2, SIZE, SIZE, 3), dtype=np.uint8)
    np.testing.assert_allclose(load_model(tmp_path / "m.keras").predict_on_batch(images),
                               model.predict_on_batch(images), rtol=1e-6)


def test_center_zoom_keeps_the_centre_at_full_size_as_uint8():
    images = np.zeros((1, 10, 10, 3), np.uint8)
    images[:, 1:9, 1:9] = 200  # a bright square whose edge is the border of the central 80%
    zoomed = keras.ops.convert_to_numpy(CenterZoom(0.8)(images))
    assert zoomed.dtype == np.uint8 and zoomed.shape == images.shape
    assert (zoomed == 200).all()  # the centre crop is the square alone, resized to the whole image
    same = keras.ops.convert_to_numpy(CenterZoom(1.0)(images))
    np.testing.assert_array_equal(same, images)
    with pytest.raises(ValueError, match="fraction"):
        CenterZoom(0.0)


def test_a_zoomed_mirrored_member_reads_the_bottom_of_that_view_and_survives_saving(tmp_path):
    bottom, a = _bottom(), _member(1, "a")
    view = View("zoomed mirrored", mirror=True, zoom=0.75)
    images = np.random.default_rng(4).integers(0, 256, (3, SIZE, SIZE, 3), dtype=np.uint8)
    by_hand = keras.ops.convert_to_numpy(CenterZoom(0.75)(images))[:, :, ::-1]
    acts = keras.ops.convert_to_numpy(view_model(bottom, view).predict_on_batch(images))
    np.testing.assert_allclose(acts, keras.ops.convert_to_numpy(bottom(by_hand)), rtol=1e-6)
    expected = vote(np.stack([keras.ops.convert_to_numpy(a(bottom(images))), keras.ops.convert_to_numpy(a(acts))]),
                    np.array([0.6, 0.4]))
    model = compose_ensemble(bottom, [a, a], [VIEWS[0], view], [0.6, 0.4])
    np.testing.assert_allclose(model.predict_on_batch(images), expected, rtol=1e-5, atol=1e-6)
    model.save(tmp_path / "zoom.keras")
    np.testing.assert_allclose(load_model(tmp_path / "zoom.keras").predict_on_batch(images), expected,
                               rtol=1e-5, atol=1e-6)


def test_a_corner_crop_view_is_the_member_on_that_resized_corner_and_survives_saving(tmp_path):
    bottom, a = _bottom(), _member(1, "a")
    crop = next(v for v in VIEWS if v.name == "crop bottom-right")
    images = np.random.default_rng(2).integers(0, 256, (4, SIZE, SIZE, 3), dtype=np.uint8)
    corner = CenterZoom(crop.zoom, anchor=(1.0, 1.0))(images)
    kept = round(SIZE * crop.zoom)
    np.testing.assert_array_equal(  # a resize of the bottom-right corner, not of the centre
        keras.ops.convert_to_numpy(corner),
        keras.ops.convert_to_numpy(CenterZoom(1.0)(keras.ops.image.resize(
            images[:, SIZE - kept:, SIZE - kept:].astype(np.float32), (SIZE, SIZE)).numpy().round().clip(0, 255)
            .astype(np.uint8))))
    model = compose_ensemble(bottom, [a, a], [VIEWS[0], crop], [0.5, 0.5])
    model.save(tmp_path / "crops.keras")
    np.testing.assert_allclose(load_model(tmp_path / "crops.keras").predict_on_batch(images),
                               model.predict_on_batch(images), rtol=1e-6)
