"""Random-resized crops: what fine-tuning the whole backbone on images trains on."""

import numpy as np

from timebox.train.augment import random_resized_crop


def _batch(n=6, h=20, w=24):
    return np.random.default_rng(1).normal(size=(n, h, w, 3)).astype(np.float32)


def test_crops_keep_the_batch_shape_and_dtype_and_take_every_pixel_from_the_same_image():
    batch = _batch()
    out = random_resized_crop(batch, np.random.default_rng(0))
    assert out.shape == batch.shape and out.dtype == batch.dtype
    for i in range(len(batch)):
        source = {tuple(p) for p in batch[i].reshape(-1, 3)}
        assert all(tuple(p) in source for p in out[i].reshape(-1, 3))


def test_crops_are_reproducible_from_the_generator_and_differ_between_batches():
    batch = _batch()
    a = random_resized_crop(batch, np.random.default_rng(0))
    np.testing.assert_array_equal(a, random_resized_crop(batch, np.random.default_rng(0)))
    rng = np.random.default_rng(0)
    assert not np.array_equal(random_resized_crop(batch, rng), random_resized_crop(batch, rng))


def test_a_crop_of_the_whole_image_at_its_own_aspect_is_the_image():
    batch = _batch(h=16, w=16)
    out = random_resized_crop(batch, np.random.default_rng(0), area=(1.0, 1.0), ratio=(1.0, 1.0))
    np.testing.assert_array_equal(out, batch)


def test_a_small_crop_enlarges_a_part_of_the_image():
    batch = np.arange(32, dtype=np.float32)[None, None, :, None].repeat(32, 1).repeat(3, 3)  # columns 0..31
    out = random_resized_crop(batch, np.random.default_rng(0), area=(0.25, 0.25), ratio=(1.0, 1.0))
    columns, counts = np.unique(out[0, 0, :, 0], return_counts=True)
    assert 16 <= len(columns) <= 17 and columns.max() - columns.min() <= 16  # half the width (its edge may fall mid-pixel)
    assert counts.max() == 2  # ... each column drawn about twice
    assert (out[0] == out[0, :1]).all()  # still the same column pattern on every row


def test_colour_jitter_varies_images_around_their_own_colours():
    """``color`` jitters brightness, contrast and saturation mildly: the batch's mean stays near the input's (a
    scalar saturation factor in Keras draws from (0, f), 0.5 being no change: 0.2 shifted it from 127 to 188) while
    the images do change."""
    from timebox.train.augment import ImageAugment

    batch = np.random.default_rng(0).uniform(0, 255, (32, 32, 32, 3)).astype(np.float32)
    out = ImageAugment("color", seed=0)(batch, np.random.default_rng(0))
    assert abs(float(out.mean()) - float(batch.mean())) < 10
    assert float(np.abs(out - batch).mean()) > 1


def test_the_layers_transform_pixels_when_the_batch_is_scaled_by_the_backbones_preprocessing():
    """At the image cut fine-tuning trains on images already scaled by the backbone ((x - 127) / 128 for Lite):
    the colour and erasing layers must see 0-255 pixels (their value range), or a brightness shift of 0.2 x 255
    swamps the scaled image (this broke `augment color,erase` at the image cut). Scaled in, the same transform
    of the pixels out, scaled and within valid pixels."""
    from timebox.models.preprocessing import MODES
    from timebox.train.augment import ImageAugment

    pixels = np.random.default_rng(0).uniform(0, 255, (16, 24, 24, 3)).astype(np.float32)
    scale, offset = (np.float32(v[0]) for v in MODES["lite"][:2])
    out = ImageAugment("color,erase", seed=3, preprocess="lite")(pixels * scale + offset, np.random.default_rng(0))
    expected = np.clip(ImageAugment("color,erase", seed=3)(pixels, np.random.default_rng(0)), 0, 255)
    np.testing.assert_allclose(out, expected * scale + offset, atol=1e-3)
    assert out.min() >= offset - 1e-6 and out.max() <= 255 * scale + offset + 1e-6


def test_bgr_preprocessing_is_augmented_in_rgb():
    """caffe-scaled images are BGR: a colour operation that weighs channels (grayscale) must read them as RGB."""
    from timebox.models.preprocessing import MODES
    from timebox.train.augment import ImageAugment

    pixels = np.random.default_rng(1).uniform(0, 255, (8, 16, 16, 3)).astype(np.float32)
    scale, offset, _ = (np.asarray(v, np.float32) for v in MODES["caffe"])
    scaled = pixels[..., ::-1] * scale + offset
    out = ImageAugment("color", seed=5, preprocess="caffe")(scaled, np.random.default_rng(0))
    expected = np.clip(ImageAugment("color", seed=5)(pixels, np.random.default_rng(0)), 0, 255)
    np.testing.assert_allclose(out, expected[..., ::-1] * scale + offset, atol=1e-3)
