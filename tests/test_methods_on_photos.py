"""Every method, on the offline default model, looks at the object: its peak is on the cat's
face and on the cup in the sample photos, and on the photo when the same photos are shrunk
into a corner of a larger picture of smooth noise (within the pointing game's 15 pixels:
the 7x7 map's top row peaks at y = 0, 8 pixels above the pasted photo). The sample photos'
objects cover their centres; in the corners they do not, so a map that always peaks at the
centre (a method that ignores the image) fails here."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from conftest import SAMPLES
from pasted import corner_pasted
from test_efficientnet_lite import BOXES

from camcli.analysis.localise import distance_to_box
from camcli.analysis.score import POINTING_TOLERANCE
from camcli.compute.methods import METHODS
from camcli.io.inputs import discover
from camcli.options import ExplainRequest
from camcli.run.session import Session

#: The off-centre pictures: which photo goes to which corner.
CORNERS = {"cat.jpg": "top-left", "coffee.jpg": "bottom-right"}


@pytest.fixture(scope="module")
def lite(loaded):
    return loaded("efficientnet-lite0")


@pytest.fixture(scope="module")
def pictures(tmp_path_factory):
    """``{path: (box, tolerance)}``: the two sample photos as they are (the object's box,
    the peak inside it), and each pasted into a corner of a 448 x 448 picture (the pasted
    photo's box, the pointing game's tolerance)."""
    folder = tmp_path_factory.mktemp("corners")
    found = {str(SAMPLES / photo): (box, 0) for photo, box in sorted(BOXES.items())}
    for photo, corner in CORNERS.items():
        path = folder / f"{corner}-{photo}"
        found[str(path)] = corner_pasted(path, photo, corner), POINTING_TOLERANCE
    return found


def points_at(heatmap: np.ndarray, image: np.ndarray, box, tolerance: int
              ) -> tuple[bool, list]:
    """Whether the map, upsampled to the photo, peaks within ``tolerance`` pixels of
    ``box``; and where it peaks."""
    height, width = image.shape[:2]
    upsampled = cv2.resize(heatmap, (width, height), interpolation=cv2.INTER_LINEAR)
    y, x = np.unravel_index(np.argmax(upsampled), upsampled.shape)
    return distance_to_box([int(x), int(y)], box) <= tolerance, [int(x), int(y)]


# randomcam: a baseline; the attention methods: a CNN has no attention (test_attention)
@pytest.mark.parametrize("name", sorted(name for name, kind in METHODS.items()
                                         if name != "randomcam" and not kind.reads_attention))
def test_every_method_peaks_on_the_cat_and_the_cup(lite, pictures, name):
    # Score-CAM on all 1280 channels takes ~25 s an image here; the test uses Faster
    # Score-CAM's 128 highest-variance maps (Wang et al.'s own speed-up), and so
    # Ablation-CAM.
    max_maps = 128 if name in ("scorecam", "ablationcam") else None
    session = Session.create(lite, ExplainRequest(method=name, max_maps=max_maps))
    for result in session.stream(discover(list(pictures))):
        hit, peak = points_at(result.maps[0].heatmap, result.image,
                              *pictures[result.input.path])
        assert hit, f"{name}: {result.input.path}: peak at {peak}"


def test_a_map_that_always_peaks_at_the_centre_fails_the_check(pictures):
    """What the check guards: a centre-only map passes on the photos as they are (their
    objects cover the centre) and fails on every off-centre picture."""
    y, x = np.mgrid[0:7, 0:7]
    centre = np.exp(-((x - 3) ** 2 + (y - 3) ** 2) / 4.0).astype(np.float32)
    for path, (box, tolerance) in pictures.items():
        hit, peak = points_at(centre, cv2.imread(path), box, tolerance)
        assert hit == path.startswith(str(SAMPLES)), (path, peak, box)
