"""Decoding: orientation, colour modes and broken files, each with its reason."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import png_header_only, write_image
from PIL import Image

from camcli.errors import ImageError
from camcli.io.images import load_rgb, resize_for_model


def test_exif_orientation_is_applied(tmp_path):
    pixels = np.zeros((20, 40, 3), np.uint8)
    pixels[:, :10] = 255  # white band on the left of the stored pixels
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    path = tmp_path / "rotated.jpg"
    Image.fromarray(pixels).save(path, exif=exif, quality=95)
    rgb = load_rgb(str(path))
    assert rgb.shape == (40, 20, 3)  # displayed upright: taller than wide
    assert rgb[:10].mean() > 200 and rgb[-10:].mean() < 50  # band now on top


@pytest.mark.parametrize("mode", ["L", "1", "P", "CMYK", "LA", "I;16", "RGBA"])
def test_every_mode_becomes_rgb(tmp_path, mode):
    fmt = "TIFF" if mode == "CMYK" else "PNG"
    path = write_image(tmp_path / f"img_{mode.replace(';', '')}.{fmt.lower()}", mode=mode)
    rgb = load_rgb(str(path))
    assert rgb.dtype == np.uint8 and rgb.shape == (48, 64, 3)


def test_sixteen_bit_keeps_its_range(tmp_path):
    values = np.array([[0, 32768, 65535]], dtype=np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(values).save(path)
    assert load_rgb(str(path))[0, :, 0].tolist() == [0, 128, 255]


def test_transparent_pixels_are_shown_on_white(tmp_path):
    rgba = np.zeros((4, 4, 4), np.uint8)  # fully transparent black
    path = tmp_path / "clear.png"
    Image.fromarray(rgba, "RGBA").save(path)
    assert (load_rgb(str(path)) == 255).all()


def test_animated_gif_gives_its_first_frame(tmp_path):
    frames = [Image.new("RGB", (8, 8), c) for c in ((255, 0, 0), (0, 0, 255))]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:])
    rgb = load_rgb(str(path))
    assert rgb[0, 0, 0] > 200 and rgb[0, 0, 2] < 50


@pytest.mark.parametrize("name, content, reason", [
    ("empty.jpg", b"", "empty file"),
    ("notes.jpg", b"this is text, not a photo\n", "not a recognised image format"),
    ("bomb.png", png_header_only(100_000, 100_000),
     "image too large (10,000,000,000 pixels; the limit is 89,478,485"),
])
def test_bad_files_raise_with_a_reason(tmp_path, name, content, reason):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ImageError) as info:
        load_rgb(str(path))
    assert info.value.reason.startswith(reason)
    assert str(info.value).startswith(str(path))


def test_truncated_jpeg_is_corrupt(tmp_path):
    good = write_image(tmp_path / "whole.jpg", size=(200, 150))
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(good.read_bytes()[:700])
    with pytest.raises(ImageError, match="corrupt image data"):
        load_rgb(str(cut))


def test_missing_file(tmp_path):
    with pytest.raises(ImageError, match="file not found"):
        load_rgb(str(tmp_path / "nope.jpg"))


def test_resize_for_model_shape_and_range():
    rgb = np.full((300, 451, 3), 200, np.uint8)
    resized = resize_for_model(rgb, (224, 224))
    assert resized.shape == (224, 224, 3) and resized.dtype == np.float32
    assert np.allclose(resized, 200.0)


def test_resize_of_a_large_photo_is_an_area_resize():
    import cv2

    # A whole-factor shrink is one box filter either way: the two steps equal one exactly.
    square = np.random.default_rng(3).integers(0, 256, (448, 448, 3), dtype=np.uint8)
    np.testing.assert_array_equal(
        resize_for_model(square, (224, 224)),
        cv2.resize(square, (224, 224), interpolation=cv2.INTER_AREA).astype(np.float32))
    # Otherwise it still averages every pixel (no aliasing): a one-pixel checkerboard
    # becomes flat mid-grey, where a resize that samples pixels (bilinear) shows a pattern.
    y, x = np.mgrid[0:500, 0:741]
    board = np.repeat((((x + y) % 2) * 255).astype(np.uint8)[:, :, None], 3, axis=2)
    shrunk = resize_for_model(board, (224, 224))
    assert abs(shrunk.mean() - 127.5) <= 0.5 and shrunk.std() <= 2.0
    sampled = cv2.resize(board, (224, 224), interpolation=cv2.INTER_LINEAR)
    assert sampled.std() > 20  # what the test would see if the shrink aliased
