"""Faithfulness metrics: right maps score better; exact values on a hand-built case."""

from __future__ import annotations

import numpy as np
import pytest

from camcli import metrics

SIZE = 32
REGION = (slice(4, 12), slice(20, 28))  # rows, cols: the only pixels the "model" looks at


def region_model(images: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """p(class 1) = sigmoid(12 * (mean red in REGION / 255) - 9): known by construction —
    high for the bright red evidence (0.94), low once it is grey (0.05) or noise."""
    red = images[:, REGION[0], REGION[1], 0].mean(axis=(1, 2)) / 255.0
    return 1.0 / (1.0 + np.exp(-(12.0 * red - 9.0)))


@pytest.fixture
def photo():
    rng = np.random.default_rng(0)
    image = rng.uniform(0, 90, (SIZE, SIZE, 3)).astype(np.float32)
    image[REGION[0], REGION[1], 0] = 250.0  # the evidence
    return image


def scores(photo, heatmap):
    original = region_model(photo[None], np.array([1]))
    return metrics.faithfulness(region_model, photo[None], heatmap[None], np.array([1]),
                                original, steps=16)


def test_a_map_on_the_evidence_beats_a_wrong_and_a_random_map(photo):
    right = np.zeros((8, 8), np.float32)
    right[1:3, 5:7] = 1.0  # REGION at 1/4 scale
    wrong = np.zeros((8, 8), np.float32)
    wrong[5:7, 1:3] = 1.0
    rand = np.random.default_rng(3).uniform(0, 1, (8, 8)).astype(np.float32)
    good, bad, noise = scores(photo, right), scores(photo, wrong), scores(photo, rand)
    for other in (bad, noise):
        assert good.deletion_auc[0] < other.deletion_auc[0]
        assert good.insertion_auc[0] > other.insertion_auc[0]
        assert good.average_drop[0] < other.average_drop[0]
    assert good.deletion_auc[0] < 0.1 < bad.deletion_auc[0]


def linear_red(images, classes):
    """A "model" whose score is the mean red level / 255: easy to follow by hand."""
    return images[..., 0].mean(axis=(1, 2)) / 255.0


def test_exact_values_on_a_two_by_two_image(monkeypatch):
    image = np.zeros((1, 2, 2, 3), np.float32)
    image[0, :, 0, 0] = 255.0  # left column red: score 0.5
    heatmap = np.array([[[0.5, 0.0], [0.5, 0.0]]], np.float32)  # the left column, at 0.5
    monkeypatch.setattr(metrics, "blurred", lambda img: np.zeros_like(img))  # a black start
    result = metrics.faithfulness(linear_red, image, heatmap, np.array([0]), np.array([0.5]),
                                  steps=2)
    # Deletion: 0, 2, 4 pixels grey (128), most salient first (pixels 0 and 2):
    # scores 0.5, (128 + 128) / 4 / 255, 128 / 255; trapezoid over [0, 1] with 3 points.
    d = [0.5, 256 / 4 / 255, 128 / 255]
    assert result.deletion_auc[0] == pytest.approx((d[0] / 2 + d[1] + d[2] / 2) / 2, abs=1e-6)
    # Insertion from black: 0, then the two red pixels back (0.5), then all (0.5).
    assert result.insertion_auc[0] == pytest.approx((0 / 2 + 0.5 + 0.5 / 2) / 2, abs=1e-6)
    # Average drop: the image times its map keeps half the red: O = 0.25, Y = 0.5 -> 50 %.
    assert result.average_drop[0] == pytest.approx(50.0, abs=1e-4)
    assert not result.increase[0]


def test_increase_in_confidence_and_running_means():
    image = np.full((1, 4, 4, 3), 200.0, np.float32)

    def prefers_dark(images, classes):
        return 1.0 - images[..., 0].mean(axis=(1, 2)) / 255.0

    heatmap = np.full((1, 2, 2), 0.5, np.float32)
    result = metrics.faithfulness(prefers_dark, image, heatmap, np.array([0]),
                                  prefers_dark(image, None), steps=4)
    assert result.increase[0] and result.average_drop[0] == 0.0
    means = metrics.RunningMeans()
    assert means.result() is None
    means.add(result.record(0))
    means.add({"deletion_auc": 0.5, "insertion_auc": 0.5, "average_drop": 10.0,
               "increase": False})
    assert means.result()["increase"] == pytest.approx(50.0)
    assert means.result()["average_drop"] == pytest.approx(5.0)
    assert means.result()["images"] == 2


def test_insertion_starts_from_the_blurred_image(photo):
    stack = metrics.perturbations(photo, np.ones((8, 8), np.float32), steps=4)
    np.testing.assert_allclose(stack[5], metrics.blurred(photo))  # insertion, step 0
    np.testing.assert_allclose(stack[9], photo)  # insertion, last step: the photo
    np.testing.assert_allclose(stack[0], photo)  # deletion, step 0
    assert (stack[4] == metrics.GREY).all()  # deletion, last step: all grey
    assert len(stack) == 2 * 5 + 1
