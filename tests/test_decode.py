"""decode_image: every Pillow mode becomes RGB of the requested size; bad files give a reason, never raise."""

import warnings

import numpy as np
import pytest
from PIL import Image

from timebox.data import decode
from timebox.data.decode import decode_image

SIZE = 32


def decoded_ok(path, size=SIZE):
    result = decode_image(path, size)
    assert result.error is None, result.error
    assert result.image.shape == (size, size, 3) and result.image.dtype == np.uint8
    return result.image


def close(pixel, expected, tolerance=12):
    return np.abs(pixel.astype(int) - np.array(expected)).max() <= tolerance


def test_whole_non_square_image_is_squashed_not_cropped(tmp_path):
    array = np.zeros((20, 60, 3), np.uint8)
    array[:, :20] = (255, 0, 0)
    array[:, 20:40] = (0, 255, 0)
    array[:, 40:] = (0, 0, 255)
    Image.fromarray(array).save(tmp_path / "wide.png")
    image = decoded_ok(tmp_path / "wide.png", 30)
    assert close(image[15, 2], (255, 0, 0)) and close(image[15, 15], (0, 255, 0)) and close(image[15, 27], (0, 0, 255))


def test_large_jpeg_is_reduced_to_requested_size(tmp_path):
    Image.new("RGB", (2000, 1500), (200, 100, 50)).save(tmp_path / "big.jpg", quality=95)
    image = decoded_ok(tmp_path / "big.jpg", 224)
    assert close(image[100, 100], (200, 100, 50), 4)


def test_exif_orientation_is_applied(tmp_path):
    """Orientation 6 (rotate 90 degrees clockwise): stored left/right halves end up top/bottom."""
    array = np.zeros((40, 80, 3), np.uint8)
    array[:, :40] = (255, 0, 0)
    array[:, 40:] = (0, 0, 255)
    img = Image.fromarray(array)
    exif = img.getexif()
    exif[0x0112] = 6
    img.save(tmp_path / "rotated.jpg", exif=exif, quality=95)
    image = decoded_ok(tmp_path / "rotated.jpg")
    assert close(image[3, 16], (255, 0, 0), 40) and close(image[28, 16], (0, 0, 255), 40)


def test_palette_with_transparency_is_composited_over_white(tmp_path):
    img = Image.new("P", (20, 20), 0)
    img.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    img.paste(1, (10, 0, 20, 20))
    img.save(tmp_path / "p.png", transparency=0)
    image = decoded_ok(tmp_path / "p.png", 20)
    assert close(image[10, 2], (255, 255, 255), 2) and close(image[10, 17], (255, 0, 0), 2)


def test_rgba_is_composited_over_white(tmp_path):
    array = np.zeros((20, 30, 4), np.uint8)
    array[:, 10:20] = (0, 0, 0, 128)
    array[:, 20:] = (0, 200, 0, 255)
    Image.fromarray(array, "RGBA").save(tmp_path / "rgba.png")
    image = decoded_ok(tmp_path / "rgba.png", 30)
    assert close(image[10, 2], (255, 255, 255), 2)
    assert close(image[10, 15], (127, 127, 127), 3)
    assert close(image[10, 27], (0, 200, 0), 2)


def test_la_is_composited_over_white(tmp_path):
    array = np.zeros((20, 20, 2), np.uint8)
    array[:, 10:] = (0, 255)
    Image.fromarray(array, "LA").save(tmp_path / "la.png")
    image = decoded_ok(tmp_path / "la.png", 20)
    assert close(image[10, 2], (255, 255, 255), 2) and close(image[10, 17], (0, 0, 0), 2)


@pytest.mark.parametrize("suffix", [".jpg", ".tif"])
def test_cmyk_is_converted_to_rgb(tmp_path, suffix):
    Image.new("CMYK", (20, 20), (255, 0, 0, 0)).save(tmp_path / f"cmyk{suffix}")
    assert close(decoded_ok(tmp_path / f"cmyk{suffix}")[10, 10], (0, 255, 255), 6)


def test_16bit_grayscale_is_scaled_not_clipped(tmp_path):
    """I;16 0 / 32768 / 65535 map to 0 / ~128 / 255 (a plain convert would clip all but 0 to white)."""
    array = np.zeros((20, 30), np.uint16)
    array[:, 10:20] = 32768
    array[:, 20:] = 65535
    img = Image.fromarray(array)
    assert img.mode == "I;16"
    img.save(tmp_path / "gray16.png")
    image = decoded_ok(tmp_path / "gray16.png", 30)
    assert close(image[10, 2], (0, 0, 0), 1)
    assert close(image[10, 15], (128, 128, 128), 1)
    assert close(image[10, 27], (255, 255, 255), 1)


def test_16bit_big_endian_tiff_is_scaled(tmp_path):
    img = Image.frombytes("I;16B", (8, 8), np.full((8, 8), 32768, ">u2").tobytes())
    img.save(tmp_path / "gray16b.tif")
    assert close(decoded_ok(tmp_path / "gray16b.tif")[4, 4], (128, 128, 128), 1)


def test_float_image_in_unit_range_is_scaled(tmp_path):
    Image.fromarray(np.full((8, 8), 0.5, np.float32), "F").save(tmp_path / "float.tif")
    assert close(decoded_ok(tmp_path / "float.tif")[4, 4], (128, 128, 128), 1)


def test_grayscale_becomes_three_equal_channels(tmp_path):
    Image.new("L", (20, 20), 77).save(tmp_path / "gray.png")
    assert decoded_ok(tmp_path / "gray.png")[5, 5].tolist() == [77, 77, 77]


def test_zero_byte_file(tmp_path):
    (tmp_path / "empty.jpg").write_bytes(b"")
    result = decode_image(tmp_path / "empty.jpg", SIZE)
    assert result.image is None and result.error == "zero-byte file"


def test_text_file_named_jpg(tmp_path):
    (tmp_path / "fake.jpg").write_text("this is not a picture\n")
    result = decode_image(tmp_path / "fake.jpg", SIZE)
    assert result.image is None and result.error == "not an image"


def test_missing_file(tmp_path):
    result = decode_image(tmp_path / "gone.jpg", SIZE)
    assert result.image is None and result.error == "file not found"


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_truncated_file_is_an_error_not_a_partial_image(tmp_path, fmt):
    noise = np.random.default_rng(0).integers(0, 256, (200, 200, 3), dtype=np.uint8)
    Image.fromarray(noise).save(tmp_path / "full", fmt)
    data = (tmp_path / "full").read_bytes()
    (tmp_path / "cut").write_bytes(data[: len(data) // 2])
    result = decode_image(tmp_path / "cut", SIZE)
    assert result.image is None and result.error == "truncated"


def test_image_over_own_pixel_limit_is_a_decompression_bomb(tmp_path, monkeypatch):
    Image.new("RGB", (20, 20)).save(tmp_path / "bomb.png")
    monkeypatch.setattr(decode, "MAX_PIXELS", 100)
    result = decode_image(tmp_path / "bomb.png", SIZE)
    assert result.image is None and result.error == "decompression bomb (400 pixels)"


@pytest.mark.parametrize("pillow_limit", [300, 150])  # 400 px: warning zone (> limit), error zone (> 2 * limit)
def test_pillow_bomb_warning_and_error_both_count_as_errors(tmp_path, monkeypatch, pillow_limit):
    Image.new("RGB", (20, 20)).save(tmp_path / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", pillow_limit)
    filters_before = list(warnings.filters)
    result = decode_image(tmp_path / "bomb.png", SIZE)
    assert result.image is None and result.error == "decompression bomb (400 pixels)"
    assert warnings.filters == filters_before
