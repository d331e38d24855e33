"""The scorecard's measures of one map, or of a map against another (``camcli evaluate``,
issue 28: the sanity checks, robustness and complexity; faithfulness and localisation
are `camcli.analysis.metrics` and `camcli.analysis.score`).

Each follows its source, as Quantus 0.6 defines it, so that figures compare on the same
maps; every map is 2-D, at the model's input size:

* `sparseness`: the Gini index of the map's absolute values (Chalasani et al. 2020;
  Quantus ``Sparseness``): 0 for a flat map, towards 1 for one hot pixel.
* `complexity`: the entropy (natural log) of the map's absolute values as a
  distribution (Bhatt et al. 2020; Quantus ``Complexity``): ``ln(n)`` for a flat map.
* `spearman`: the Spearman rank correlation of two maps' absolute values (Adebayo et al.
  2018, model parameter randomisation; Quantus ``MPRT``'s similarity).
* `ssim`: the structural similarity of two maps (Wang et al. 2004) as scikit-image
  computes it: a 7x7 uniform window, sample covariances, K1 = 0.01, K2 = 0.03, the mean
  over the window centres at least 3 pixels from the edge (Quantus ``RandomLogit`` and
  ``MPRT``).
* `max_sensitivity`: the largest ``‖m − m′‖ / ‖m‖`` over a map's noisy copies (Yeh et al.
  2019; Quantus ``MaxSensitivity``, Frobenius norms).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage, stats

#: Quantus adds it to every value before the Gini index (no division by zero).
GINI_EPSILON = 1e-7
#: scikit-image's SSIM: the window, and the constants of the luminance and contrast terms.
SSIM_WINDOW, SSIM_K1, SSIM_K2 = 7, 0.01, 0.03


def sparseness(heatmap: np.ndarray) -> float:
    """The Gini index of ``|heatmap|``: ``Σ (2i − n − 1) a_i / (n Σ a_i)`` over the values
    sorted ascending, ``i`` from 1, each raised by `GINI_EPSILON`."""
    values = np.sort(np.abs(np.asarray(heatmap, np.float64)).ravel() + GINI_EPSILON)
    count = values.size
    ranks = np.arange(1, count + 1)
    return float(np.sum((2 * ranks - count - 1) * values) / (count * np.sum(values)))


def complexity(heatmap: np.ndarray) -> float:
    """The entropy (nats) of ``|heatmap|`` normalised to sum 1; NaN for an all-zero map
    (no distribution, as Quantus gives)."""
    values = np.abs(np.asarray(heatmap, np.float64)).ravel()
    total = values.sum()
    if total == 0:
        return float("nan")
    return float(stats.entropy(values / total))


def spearman(first: np.ndarray, second: np.ndarray) -> float:
    """Spearman's rank correlation of the two maps' absolute values (ties share their mean
    rank); NaN when either map is constant."""
    a = np.abs(np.asarray(first, np.float64)).ravel()
    b = np.abs(np.asarray(second, np.float64)).ravel()
    if a.min() == a.max() or b.min() == b.max():
        return float("nan")
    return float(stats.spearmanr(a, b).statistic)


def ssim(first: np.ndarray, second: np.ndarray, data_range: float = 1.0) -> float:
    """The mean structural similarity of two 2-D maps of at least 7x7 (scikit-image's
    ``structural_similarity`` with its defaults and ``data_range``)."""
    x = np.asarray(first, np.float64)
    y = np.asarray(second, np.float64)
    if x.shape != y.shape or x.ndim != 2 or min(x.shape) < SSIM_WINDOW:
        raise ValueError(f"ssim needs two 2-D maps of the same shape, at least "
                         f"{SSIM_WINDOW}x{SSIM_WINDOW}; got {x.shape} and {y.shape}")
    window = SSIM_WINDOW
    points = window * window
    covariance = points / (points - 1)  # sample covariances, as scikit-image's default

    def mean(image):
        return ndimage.uniform_filter(image, size=window, mode="reflect")

    ux, uy = mean(x), mean(y)
    vx = covariance * (mean(x * x) - ux * ux)
    vy = covariance * (mean(y * y) - uy * uy)
    vxy = covariance * (mean(x * y) - ux * uy)
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    local = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    pad = (window - 1) // 2
    return float(local[pad:-pad, pad:-pad].mean())


def max_sensitivity(heatmap: np.ndarray, noisy: list[np.ndarray]) -> float:
    """``max ‖heatmap − m′‖ / ‖heatmap‖`` over the maps ``noisy`` of the noisy copies
    (Frobenius norms); NaN with no copy or an all-zero map."""
    original = np.asarray(heatmap, np.float64)
    norm = np.linalg.norm(original)
    if not noisy or norm == 0:
        return float("nan")
    return float(max(np.linalg.norm(original - np.asarray(m, np.float64)) / norm
                     for m in noisy))
