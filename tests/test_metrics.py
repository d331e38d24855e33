"""Faithfulness metrics: right maps score better; exact values on a hand-built case."""

from __future__ import annotations

import numpy as np
import pytest

from camcli.analysis import metrics

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


# -- ROAD ------------------------------------------------------------------------------------


def dense_imputation(image, removed):
    """ROAD's linear imputation written out: for each removed pixel i, sum over its
    neighbours j inside the image of w_ij (x_i - x_j) = 0, solved densely."""
    height, width = removed.shape
    unknown = [(y, x) for y in range(height) for x in range(width) if removed[y, x]]
    index = {p: k for k, p in enumerate(unknown)}
    weights = {(0, 1): 1 / 6, (0, -1): 1 / 6, (1, 0): 1 / 6, (-1, 0): 1 / 6,
               (1, 1): 1 / 12, (1, -1): 1 / 12, (-1, 1): 1 / 12, (-1, -1): 1 / 12}
    a = np.zeros((len(unknown), len(unknown)))
    b = np.zeros((len(unknown), 3))
    for k, (y, x) in enumerate(unknown):
        for (dy, dx), w in weights.items():
            ny, nx = y + dy, x + dx
            if not (0 <= ny < height and 0 <= nx < width):
                continue
            a[k, k] += w
            if removed[ny, nx]:
                a[k, index[(ny, nx)]] -= w
            else:
                b[k] += w * image[ny, nx]
    out = image.astype(np.float64).copy()
    for (y, x), value in zip(unknown, np.linalg.solve(a, b), strict=True):
        out[y, x] = value
    return out


def test_imputation_solves_the_neighbour_mean_system():
    rng = np.random.default_rng(4)
    image = rng.uniform(0, 255, (5, 6, 3)).astype(np.float32)
    removed = rng.uniform(size=(5, 6)) < 0.5
    removed[0, 0] = removed[4, 5] = True  # corners: only 3 neighbours inside
    filled = metrics.impute(image, removed, rng, noise=0.0)
    np.testing.assert_allclose(filled, dense_imputation(image, removed), atol=2e-3)
    np.testing.assert_array_equal(filled[~removed], image[~removed])  # kept as they were


def test_one_removed_pixel_is_the_weighted_mean_of_its_neighbours():
    image = np.zeros((3, 3, 3), np.float32)
    image[0, 1] = 60.0  # beside: weight 1/6
    image[0, 0] = 120.0  # diagonal: weight 1/12
    removed = np.zeros((3, 3), bool)
    removed[1, 1] = True
    filled = metrics.impute(image, removed, np.random.default_rng(0), noise=0.0)
    np.testing.assert_allclose(filled[1, 1], 60.0 / 6 + 120.0 / 12, atol=1e-4)


def test_imputation_noise_has_road_s_size():
    image = np.full((120, 120, 3), 100.0, np.float32)
    removed = np.zeros((120, 120), bool)
    removed[10:110, 10:110] = True  # a constant image: the noiseless fill is 100
    filled = metrics.impute(image, removed, np.random.default_rng(1))
    noise = filled[removed] - 100.0
    assert metrics.ROAD_NOISE == pytest.approx(0.576, abs=1e-3)
    assert noise.std() == pytest.approx(metrics.ROAD_NOISE, rel=0.05)
    assert abs(noise.mean()) < 0.02


def test_road_removes_above_the_percentile_first_then_below():
    rng = np.random.default_rng(2)
    image = rng.uniform(0, 255, (16, 16, 3)).astype(np.float32)
    heatmap = rng.permutation(256).reshape(16, 16).astype(np.float32) / 255.0  # distinct
    stack = metrics.road_images(image, heatmap)
    assert len(stack) == 18
    upsampled = metrics.upsample(heatmap, 16, 16)
    for k, percentile in enumerate(metrics.ROAD_PERCENTILES):
        morf = (stack[k] != image).any(axis=2)
        lerf = (stack[9 + k] != image).any(axis=2)
        np.testing.assert_array_equal(morf, upsampled >= np.percentile(upsampled, percentile))
        np.testing.assert_array_equal(
            lerf, 1 - upsampled >= np.percentile(1 - upsampled, percentile))
        assert abs(morf.sum() - 256 * (100 - percentile) / 100) <= 1
    again = metrics.road_images(image, heatmap)
    np.testing.assert_array_equal(again, stack)  # seeded per photo


def test_road_scores_are_mean_changes_of_the_class_probability(photo):
    right = np.zeros((8, 8), np.float32)
    right[1:3, 5:7] = 1.0  # REGION at 1/4 scale
    right += np.linspace(0, 0.01, 64, dtype=np.float32).reshape(8, 8)  # no ties
    wrong = right[::-1, ::-1].copy()
    original = region_model(photo[None], np.array([1]))
    good = metrics.road(region_model, photo[None], right[None], np.array([1]), original)
    bad = metrics.road(region_model, photo[None], wrong[None], np.array([1]), original)
    stack = metrics.road_images(photo, right)
    changes = region_model(stack, np.ones(18, np.int32)) - original[0]
    assert good.morf[0] == pytest.approx(changes[:9].mean(), abs=1e-6)
    assert good.lerf[0] == pytest.approx(changes[9:].mean(), abs=1e-6)
    assert good.combined[0] == pytest.approx((good.lerf[0] - good.morf[0]) / 2)
    # Removing the evidence first drops the class; keeping it keeps it.
    assert good.morf[0] < bad.morf[0] and good.lerf[0] > bad.lerf[0]
    assert good.combined[0] > 0.3 > bad.combined[0]
    assert set(good.record(0)) == {"road_morf", "road_lerf", "road_combined"}
