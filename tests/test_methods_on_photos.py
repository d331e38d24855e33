"""Every method, on the offline default model and the sample photos, looks at the object."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from conftest import SAMPLES
from test_efficientnet_lite import BOXES

from camcli.compute.methods import METHODS
from camcli.compute.models import load
from camcli.io.inputs import discover
from camcli.options import ExplainRequest
from camcli.run.session import Session


@pytest.fixture(scope="module")
def lite():
    return load("efficientnet-lite0")


@pytest.mark.parametrize("name", sorted(set(METHODS) - {"randomcam"}))  # a baseline
def test_every_method_peaks_on_the_cat_and_the_cup(lite, name):
    # Score-CAM on all 1280 channels takes ~25 s an image here; the test uses Faster
    # Score-CAM's 128 highest-variance maps (Wang et al.'s own speed-up), and so
    # Ablation-CAM.
    max_maps = 128 if name in ("scorecam", "ablationcam") else None
    session = Session.create(lite, ExplainRequest(method=name, max_maps=max_maps))
    photos = [str(SAMPLES / photo) for photo in sorted(BOXES)]
    for result in session.stream(discover(photos)):
        height, width = result.image.shape[:2]
        upsampled = cv2.resize(result.maps[0].heatmap, (width, height),
                               interpolation=cv2.INTER_LINEAR)
        y, x = np.unravel_index(np.argmax(upsampled), upsampled.shape)
        x0, y0, x1, y1 = BOXES[result.input.relative]
        assert x0 <= x <= x1 and y0 <= y <= y1, f"{name}: peak at ({x}, {y})"
