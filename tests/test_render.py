"""Rendering: resize to the photo, colour, blend; atomic writes."""

from __future__ import annotations

import os

import cv2
import numpy as np
import pytest

from camcli.io.atomic import write_atomic
from camcli.run import render


@pytest.fixture
def photo():
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)


def test_overlay_has_the_photo_size_and_blends(photo):
    heatmap = np.zeros((7, 7), np.float32)
    heatmap[3, 3] = 1.0
    assert render.overlay(photo, heatmap, 0.4, "jet").shape == (37, 53, 3)

    only_photo = render.overlay(photo, heatmap, alpha=0.0, colormap="jet")
    np.testing.assert_array_equal(only_photo, cv2.cvtColor(photo, cv2.COLOR_RGB2BGR))

    only_map = render.overlay(photo, heatmap, alpha=1.0, colormap="jet")
    np.testing.assert_array_equal(only_map, render.colorize(heatmap, (53, 37), "jet"))

    blended = render.overlay(photo, heatmap, alpha=0.4, colormap="jet").astype(np.float64)
    expected = 0.4 * only_map + 0.6 * cv2.cvtColor(photo, cv2.COLOR_RGB2BGR)
    assert np.abs(blended - expected).max() <= 1.0


def test_colorize_upsamples_with_the_peak_in_place():
    heatmap = np.zeros((7, 7), np.float32)
    heatmap[1, 5] = 1.0  # top right
    coloured = render.colorize(heatmap, (70, 70), "jet")
    hottest = np.unravel_index(np.argmax(coloured[:, :, 2].astype(int)
                                         - coloured[:, :, 0]), (70, 70))
    assert 10 <= hottest[0] <= 20 and 50 <= hottest[1] <= 60


def test_write_atomic_leaves_no_temporary_file(tmp_path):
    target = tmp_path / "sub" / "out.jpg"
    write_atomic(str(target), b"complete")
    assert target.read_bytes() == b"complete"
    assert os.listdir(target.parent) == ["out.jpg"]
    assert (target.stat().st_mode & 0o777) != 0o600  # not mkstemp's private mode


def test_jpeg_round_trip(photo):
    decoded = cv2.imdecode(np.frombuffer(render.encode_jpeg(photo, 95), np.uint8),
                           cv2.IMREAD_COLOR)
    assert decoded.shape == photo.shape


def test_panel_is_photo_heatmap_overlay_under_a_caption(photo):
    heatmap = np.zeros((7, 7), np.float32)
    heatmap[2, 4] = 1.0
    picture = render.panel(photo, heatmap, "tabby (class 281) 81.3% - gradcam", 0.4, "jet")
    height, width = photo.shape[:2]
    bar = picture.shape[0] - height
    assert picture.shape == (bar + height, 3 * width, 3) and bar >= 12
    panes = picture[bar:]
    np.testing.assert_array_equal(panes[:, :width], cv2.cvtColor(photo, cv2.COLOR_RGB2BGR))
    np.testing.assert_array_equal(panes[:, width:2 * width],
                                  render.colorize(heatmap, (width, height), "jet"))
    np.testing.assert_array_equal(panes[:, 2 * width:], render.overlay(photo, heatmap, 0.4,
                                                                       "jet"))
    caption = picture[:bar]
    assert (caption > 200).any() and (caption == 32).any()  # white text on the dark bar
