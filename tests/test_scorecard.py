"""The scorecard's measures (`camcli.analysis.scorecard`) on maps made by hand, against
values worked out by hand and a loop-by-loop NumPy SSIM."""

from __future__ import annotations

import math

import numpy as np
import pytest

from camcli.analysis import scorecard
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


def test_maps_are_measured_min_max_normalised_at_the_input_size():
    low = np.array([[0.2, 0.6], [1.0, 0.2]], np.float32)
    got = scorecard.at_input_size(low, 4, 6)
    assert got.shape == (4, 6)
    # pytorch-grad-cam's scale_cam_image: (m - min) / (1e-7 + max - min), then cv2 bilinear.
    import cv2

    expected = cv2.resize((low - 0.2) / (1e-7 + 0.8), (6, 4), interpolation=cv2.INTER_LINEAR)
    np.testing.assert_allclose(got, expected, atol=1e-7)
    assert got.min() == 0.0 and got.max() == pytest.approx(1.0, abs=1e-6)
    same = scorecard.at_input_size(np.array([[0.0, 2.0], [1.0, 1.0]]), 2, 2)
    np.testing.assert_allclose(same, [[0.0, 1.0], [0.5, 0.5]], atol=1e-6)


def test_a_map_gone_blank_keeps_none_of_the_original_order():
    original = np.array([[0.0, 0.5], [1.0, 0.2]])
    assert scorecard.kept_order(original, np.zeros((2, 2))) == 0.0
    assert scorecard.kept_order(original, original * 3) == pytest.approx(1.0)
    assert scorecard.kept_order(original, -original) == pytest.approx(1.0)  # |values|
    assert math.isnan(scorecard.kept_order(np.ones((2, 2)), original))


def test_the_random_logit_class_is_any_other_class_seeded():
    classes = np.array([0, 1, 2, 2, 0] * 400, np.int32)
    drawn = scorecard.other_class(classes, 3, seed=5)
    assert (drawn != classes).all() and set(drawn.tolist()) == {0, 1, 2}
    np.testing.assert_array_equal(drawn, scorecard.other_class(classes, 3, seed=5))
    # Uniform among the two others: for class 0, classes 1 and 2 about half each.
    ones = (drawn[classes == 0] == 1).mean()
    assert 0.45 < ones < 0.55


def test_the_sanity_check_reads_the_first_half_of_the_cascade():
    # 5 steps: the first 3 count. Mean 0.5 fails (at least the threshold), 0.49 passes.
    assert scorecard.sanity_passed([0.9, 0.4, 0.2, 0.9, 0.9]) == (False, pytest.approx(0.5))
    assert scorecard.sanity_passed([0.9, 0.37, 0.2, 0.0, 0.0]) == (True, pytest.approx(0.49))
    assert scorecard.sanity_passed([0.7]) == (False, pytest.approx(0.7))
    assert scorecard.sanity_passed([0.1, 0.95]) == (True, pytest.approx(0.1))
    assert scorecard.sanity_passed([None, None]) == (None, None)
    assert scorecard.first_half([1, 2, 3, 4]) == [1, 2]


def row(method, passed, road, deletion, insertion, sensitivity, seconds=0.01, baseline=False,
        **more):
    return {"method": method, "sanity": {"passed": passed}, "road": road,
            "deletion_auc": deletion, "insertion_auc": insertion,
            "max_sensitivity": sensitivity, "seconds_per_image": seconds,
            "baseline": baseline, **more}


def test_the_recommendation_is_the_best_mean_rank_among_the_methods_that_pass():
    rows = [
        # best on every measure, but fails the sanity check
        row("guidedbackprop", False, 0.9, 0.01, 0.9, 0.01),
        # ranks among all four: ROAD 3, deletion 3, insertion 4, sensitivity 4 -> 3.5
        row("gradcam", True, 0.5, 0.10, 0.5, 0.30),
        # 4, 4, 3, 3 -> 3.5 as well, and slower: gradcam wins the tie
        row("hirescam", True, 0.4, 0.20, 0.6, 0.20, seconds=0.02),
        # a baseline is never recommended
        row("randomcam", True, 0.95, 0.001, 0.95, 0.001, baseline=True),
    ]
    recommended, ranks = scorecard.recommend(rows, with_truth=False)
    assert recommended == "gradcam"
    # The others after the eligible, by mean rank: randomcam (1.0), guidedbackprop (2.0).
    assert ranks == [4, 1, 2, 3]
    # With truth, the localisation measures count too: hirescam now wins (mean rank
    # (4 + 4 + 3 + 3 + 1 + 1) / 6 against gradcam's (3 + 3 + 4 + 4 + 2 + 2.5) / 6).
    rows[1].update(pointing=0.2, max_box_acc_v2=0.1)
    rows[2].update(pointing=0.9, max_box_acc_v2=0.8)
    rows[0].update(pointing=None, max_box_acc_v2=None)  # missing: last
    rows[3].update(pointing=0.1, max_box_acc_v2=0.1)
    assert scorecard.recommend(rows, with_truth=True) == ("hirescam", [4, 2, 1, 3])
    # None passes: nothing is recommended, and the ranks still order them.
    for each in rows:
        each["sanity"]["passed"] = False
    recommended, ranks = scorecard.recommend(rows, with_truth=False)
    assert recommended is None and sorted(ranks) == [1, 2, 3, 4]


def test_the_same_maps_tie_and_the_faster_method_is_recommended():
    """CAM and Grad-CAM give the same maps on a GAP -> Dense head: their measures differ
    in the last bits only, so the time decides, not the rounding."""
    rows = [row("gradcam", True, 0.17590001, 0.1387, 0.4333, 0.2361000001, seconds=0.02),
            row("cam", True, 0.1759, 0.13870000002, 0.4333, 0.2361, seconds=0.01)]
    assert scorecard.recommend(rows, with_truth=False) == ("cam", [2, 1])
    np.testing.assert_array_equal(scorecard.ranks_of([0.1, None, 0.3, 0.1], True),
                                  [2.5, 4, 1, 2.5])


def test_the_table_marks_the_best_of_each_column():
    rows = [row("gradcam", True, 0.5, 0.10, 0.5, 0.30, random_logit=0.2, sparseness=0.4,
                complexity=10.0, rank=1),
            row("randomcam", True, 0.1, 0.30, 0.7, 0.90, baseline=True, random_logit=1.0,
                sparseness=0.6, complexity=9.0, rank=3),
            row("guidedbackprop", False, 0.2, 0.05, 0.4, 0.80, random_logit=0.9,
                sparseness=0.5, complexity=9.5, rank=2)]
    rows[0]["sanity"]["first_half_spearman"] = 0.02
    rows[1]["sanity"]["first_half_spearman"] = 0.1
    rows[2]["sanity"]["first_half_spearman"] = 0.95
    text = scorecard.table({"methods": rows, "recommended": "gradcam", "rule": scorecard.RULE,
                            "sanity_rule": scorecard.SANITY_RULE})
    lines = text.splitlines()
    assert lines[0].split() == ["method", "sanity", "rand.logit", "ROAD", "del.AUC",
                                "ins.AUC", "max.sens", "sparse", "complex", "s/img", "rank"]
    assert lines[1].split() == ["gradcam", "pass", "0.02", "0.200*", "0.5000*", "0.1000",
                                "0.5000*", "0.300*", "0.400", "10.00", "0.010*", "1"]
    # A baseline is never marked best (its insertion AUC is higher).
    assert lines[2].split()[:3] == ["guidedbackprop", "FAIL", "0.95"]
    assert "0.0500*" in lines[2] and "0.7000" in lines[3] and "*" not in lines[3]
    assert "recommended: gradcam" in text
