"""The scorecard's measures (`camcli.analysis.scorecard`) on maps made by hand, against
values worked out by hand and a loop-by-loop NumPy SSIM."""

from __future__ import annotations

import math

import numpy as np
import pytest

from camcli.analysis.scorecard import complexity, max_sensitivity, sparseness, spearman, ssim


def test_sparseness_is_the_gini_index_of_the_absolute_values():
    # one hot pixel of four: (2*4 - 4 - 1) * 1 / (4 * 1) = 0.75
    assert sparseness(np.array([[0.0, 0.0], [0.0, 1.0]])) == pytest.approx(0.75, abs=1e-6)
    # 1, 2, 3, 4: (-3*1 - 1*2 + 1*3 + 3*4) / (4 * 10) = 0.25, whatever the signs
    assert sparseness(np.array([[1.0, 2.0], [3.0, 4.0]])) == pytest.approx(0.25, abs=1e-6)
    assert sparseness(np.array([[-1.0, 2.0], [-3.0, 4.0]])) == pytest.approx(0.25, abs=1e-6)
    assert sparseness(np.full((5, 5), 0.3)) == pytest.approx(0.0, abs=1e-12)


def test_complexity_is_the_entropy_of_the_map_as_a_distribution():
    assert complexity(np.full((4, 4), 0.2)) == pytest.approx(math.log(16))
    assert complexity(np.array([[0.0, 0.0], [0.0, 1.0]])) == pytest.approx(0.0)
    # 1, 1, 2: p = 1/4, 1/4, 1/2; H = 2 * (1/4) ln 4 + (1/2) ln 2
    assert complexity(np.array([1.0, -1.0, 2.0])) == pytest.approx(
        0.5 * math.log(4) + 0.5 * math.log(2))
    assert math.isnan(complexity(np.zeros((3, 3))))


def test_spearman_ranks_the_absolute_values():
    ramp = np.array([[1.0, 2.0], [3.0, 4.0]])
    assert spearman(ramp, 10 * ramp) == pytest.approx(1.0)
    assert spearman(ramp, ramp[::-1, ::-1]) == pytest.approx(-1.0)
    # |(-4, 1, 2, 3)| ranks 4, 1, 2, 3 against 1, 2, 3, 4: d² sums to 12,
    # rho = 1 - 6 * 12 / (4 * 15) = -0.2
    assert spearman(np.array([[-4.0, 1.0], [2.0, 3.0]]), ramp) == pytest.approx(-0.2)
    assert math.isnan(spearman(np.ones((2, 2)), ramp))


def reference_ssim(x, y, data_range=1.0, window=7):
    """Wang et al.'s SSIM, window by window: the mean over every 7x7 window inside the map
    of (2 mx my + C1)(2 sxy + C2) / ((mx² + my² + C1)(sx² + sy² + C2)), sample
    (co)variances, C1 = (0.01 R)², C2 = (0.03 R)²."""
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    values = []
    for top in range(x.shape[0] - window + 1):
        for left in range(x.shape[1] - window + 1):
            a = x[top:top + window, left:left + window].ravel()
            b = y[top:top + window, left:left + window].ravel()
            sxy = np.cov(a, b, ddof=1)[0, 1]
            values.append((2 * a.mean() * b.mean() + c1) * (2 * sxy + c2)
                          / ((a.mean() ** 2 + b.mean() ** 2 + c1)
                             * (a.var(ddof=1) + b.var(ddof=1) + c2)))
    return float(np.mean(values))


def test_ssim_equals_the_window_by_window_formula():
    rng = np.random.default_rng(3)
    x = rng.uniform(0, 1, (12, 15))
    y = np.clip(x + rng.normal(0, 0.2, x.shape), 0, 1)
    assert ssim(x, x) == pytest.approx(1.0)
    assert ssim(x, y) == pytest.approx(reference_ssim(x, y), abs=1e-10)
    assert ssim(x, 1 - x) == pytest.approx(reference_ssim(x, 1 - x), abs=1e-10)
    assert ssim(x, 1 - x) < 0 < ssim(x, y) < 1
    with pytest.raises(ValueError, match="at least 7x7"):
        ssim(x[:5], y[:5])


def test_max_sensitivity_is_the_largest_relative_change():
    heatmap = np.array([[3.0, 4.0]])  # norm 5
    noisy = [np.array([[3.0, 4.0]]), np.array([[0.0, 4.0]]), np.array([[3.0, 0.0]])]
    assert max_sensitivity(heatmap, noisy) == pytest.approx(0.8)  # |(0, 4)| / 5
    assert max_sensitivity(heatmap, noisy[:2]) == pytest.approx(0.6)
    assert math.isnan(max_sensitivity(heatmap, []))
    assert math.isnan(max_sensitivity(np.zeros((2, 2)), noisy))
