"""Faithfulness metrics: does the heatmap point at what the model actually uses?

All metrics work on the model's input (the photo resized to the input size, RGB in
[0, 255], before preprocessing) and on the map upsampled to that size (bilinear, as for
the overlays). ``p(x)`` is the explained class's probability on image ``x``.

* **Deletion AUC** (Petsiuk et al., RISE, BMVC 2018): pixels are ranked by saliency
  (highest first; ties by position). For step s = 0..S the top s/S of the pixels are
  replaced by grey (128, 128, 128); the area under p over the fraction removed (trapezoid
  rule on the S+1 points) is the score. **Lower is better**: removing the pixels the map
  calls important should make the class vanish quickly.
* **Insertion AUC** (same paper): start from the image blurred (Gaussian, sigma = 5 % of
  the input width, as RISE's 11-pixel, sigma-5 kernel at 224) and put the top s/S of the
  original pixels back. **Higher is better**.
* **Average drop** (Chattopadhay et al., Grad-CAM++, WACV 2018): with ``Y = p(image)`` and
  ``O = p(image * map)`` (the image multiplied by its own map), ``max(0, Y - O) / Y``, in
  percent. **Lower is better.**
* **Increase in confidence** (same paper): whether ``O > Y``. Over a run, the percentage
  of images where it holds. **Higher is better.**

All ``(2S + 3)`` images of a batch of photos go through the model together, in chunks of
the batch size. The default S is 20.

* **ROAD** (Rong et al., "A Consistent and Efficient Evaluation Strategy for Attribution
  Methods", ICML 2022), ``--metrics road``: at the percentiles 10, 20, ..., 90 of the
  map, the pixels above it (MoRF: most relevant first) or below (LeRF) are removed and
  filled in by noisy linear imputation (`impute`), and ``p(imputed) - p(image)`` is
  averaged over the percentiles. ``road_morf``: **lower is better**; ``road_lerf``:
  **higher is better**; ``road_combined = (road_lerf - road_morf) / 2``: **higher is
  better**. pytorch-grad-cam's ``metrics/road.py`` defines it the same way.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import cv2
import numpy as np
from scipy import sparse
from scipy.sparse.linalg import splu

from camcli.analysis.localise import upsample
from camcli.options import DEFAULT_METRIC_STEPS

GREY = 128.0


@dataclass
class Faithfulness:
    """Per-image metrics (arrays over the batch)."""

    deletion_auc: np.ndarray
    insertion_auc: np.ndarray
    average_drop: np.ndarray  # percent
    increase: np.ndarray  # bool

    def record(self, row: int) -> dict:
        """The manifest's ``metrics`` object for one image."""
        return {
            "deletion_auc": round(float(self.deletion_auc[row]), 6),
            "insertion_auc": round(float(self.insertion_auc[row]), 6),
            "average_drop": round(float(self.average_drop[row]), 4),
            "increase": bool(self.increase[row]),
        }


def auc(probabilities: np.ndarray) -> np.ndarray:
    """Trapezoid area over x in [0, 1] of ``(n, S + 1)`` evenly spaced values."""
    steps = probabilities.shape[1] - 1
    return (probabilities.sum(axis=1) - (probabilities[:, 0] + probabilities[:, -1]) / 2) / steps


def saliency_order(upsampled: np.ndarray) -> np.ndarray:
    """Pixel indices of the (upsampled) map, most salient first (stable on ties)."""
    return np.argsort(-upsampled.ravel(), kind="stable")


def blurred(image: np.ndarray) -> np.ndarray:
    sigma = 0.05 * image.shape[1]
    return cv2.GaussianBlur(image, (0, 0), sigmaX=sigma, sigmaY=sigma)


def perturbations(image: np.ndarray, heatmap: np.ndarray, steps: int) -> np.ndarray:
    """The ``2 * (steps + 1) + 1`` images one photo needs: deletion steps, insertion steps,
    then the image multiplied by its map. ``image``: (h, w, 3) float32 RGB in [0, 255]."""
    height, width = image.shape[:2]
    upsampled = upsample(heatmap, width, height)  # as the overlays draw it
    order = saliency_order(upsampled)
    pixels = height * width
    flat = image.reshape(pixels, 3)
    grey = np.full_like(flat, GREY)
    soft = blurred(image).reshape(pixels, 3)
    out = np.empty((2 * (steps + 1) + 1, height, width, 3), np.float32)
    for s in range(steps + 1):
        chosen = order[: round(pixels * s / steps)]
        deleted = flat.copy()
        deleted[chosen] = grey[chosen]
        out[s] = deleted.reshape(height, width, 3)
        inserted = soft.copy()
        inserted[chosen] = flat[chosen]
        out[steps + 1 + s] = inserted.reshape(height, width, 3)
    out[-1] = image * np.clip(upsampled, 0.0, 1.0)[:, :, None]
    return out


def faithfulness(probability_of, images: np.ndarray, heatmaps: np.ndarray,
                 class_index: np.ndarray, original: np.ndarray, steps: int = DEFAULT_METRIC_STEPS,
                 batch_size: int = 32) -> Faithfulness:
    """Compute the metrics for a batch.

    Args:
        probability_of: ``f(images, classes) -> probabilities`` of the given classes for a
            float32 RGB [0, 255] batch (preprocessing is its business).
        images: ``(n, h, w, 3)`` model inputs; heatmaps: ``(n, mh, mw)`` in [0, 1];
        class_index: ``(n,)`` explained classes; original: ``(n,)`` their probabilities
            on the unmodified images.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    per_image = 2 * (steps + 1) + 1
    stacked = np.concatenate([perturbations(img, heat, steps)
                              for img, heat in zip(images, heatmaps, strict=True)])
    classes = np.repeat(np.asarray(class_index, np.int32), per_image)
    scores = np.concatenate([probability_of(stacked[i:i + batch_size], classes[i:i + batch_size])
                             for i in range(0, len(stacked), batch_size)])
    scores = scores.reshape(len(images), per_image)
    deletion = auc(scores[:, : steps + 1])
    insertion = auc(scores[:, steps + 1: 2 * (steps + 1)])
    masked = scores[:, -1]
    original = np.asarray(original, np.float64)
    drop = np.where(original > 0, np.maximum(0.0, original - masked) / original, 0.0) * 100.0
    return Faithfulness(deletion, insertion, drop, masked > original)


# -- ROAD --------------------------------------------------------------------------------------

#: ROAD's percentiles of the map (pytorch-grad-cam's and the paper's).
ROAD_PERCENTILES = (10, 20, 30, 40, 50, 60, 70, 80, 90)

#: The imputation's neighbours and their weights: 1/6 beside, 1/12 diagonally (ROAD's).
NEIGHBOURS = (((0, 1), 1 / 6), ((0, -1), 1 / 6), ((1, 0), 1 / 6), ((-1, 0), 1 / 6),
              ((1, 1), 1 / 12), ((1, -1), 1 / 12), ((-1, 1), 1 / 12), ((-1, -1), 1 / 12))

#: The imputation's noise (standard deviation) on the 0-255 scale: ROAD's 0.01 on images
#: normalised by ImageNet's standard deviation (about 0.226 of the 0-1 range).
ROAD_NOISE = 0.01 * 0.226 * 255.0


def impute(image: np.ndarray, removed: np.ndarray, rng: np.random.Generator,
           noise: float = ROAD_NOISE) -> np.ndarray:
    """ROAD's noisy linear imputation: every removed pixel becomes the weighted mean of its
    neighbours inside the image (`NEIGHBOURS`, removed ones included), plus Gaussian noise.

    The means of all removed pixels are one sparse, symmetric linear system, solved for the
    three channels at once by one sparse LU factorisation (SciPy's SuperLU).

    Args:
        image: ``(h, w, 3)`` float RGB.
        removed: ``(h, w)`` bool, the pixels to fill in.
        rng: the noise's generator.
    """
    height, width = removed.shape
    flat = removed.ravel()
    unknown = np.flatnonzero(flat)
    out = image.astype(np.float32).reshape(-1, image.shape[2])
    if not len(unknown):
        return out.reshape(image.shape)
    number = np.full(flat.size, -1)
    number[unknown] = np.arange(len(unknown))
    rows, cols = np.divmod(unknown, width)
    known_sum = np.zeros((len(unknown), out.shape[1]))
    weight_sum = np.zeros(len(unknown))
    entries = []
    for (dy, dx), weight in NEIGHBOURS:
        y, x = rows + dy, cols + dx
        inside = np.flatnonzero((y >= 0) & (y < height) & (x >= 0) & (x < width))
        neighbour = y[inside] * width + x[inside]
        weight_sum[inside] += weight
        missing = flat[neighbour]
        entries.append((inside[missing], number[neighbour[missing]], -weight))
        np.add.at(known_sum, inside[~missing], weight * out[neighbour[~missing]])
    # sum_j w_ij (x_i - x_j) = 0 for every removed i, known x_j moved to the right side.
    system = sparse.csc_matrix((
        np.concatenate([weight_sum] + [np.full(len(r), w) for r, _, w in entries]),
        (np.concatenate([np.arange(len(unknown))] + [r for r, _, _ in entries]),
         np.concatenate([np.arange(len(unknown))] + [c for _, c, _ in entries]))),
        shape=(len(unknown), len(unknown)), dtype=np.float64)
    factor = splu(system.astype(np.float32), permc_spec="MMD_AT_PLUS_A",
                  diag_pivot_thresh=0.0, options={"SymmetricMode": True})
    filled = factor.solve(known_sum.astype(np.float32))
    out[unknown] = filled + noise * rng.standard_normal(filled.shape).astype(np.float32)
    return out.reshape(image.shape)


def road_images(image: np.ndarray, heatmap: np.ndarray) -> np.ndarray:
    """The ``2 * len(ROAD_PERCENTILES)`` imputed images of one photo: MoRF at each
    percentile, then LeRF. The noise is seeded per photo, so a photo's images do not
    depend on its batch."""
    height, width = image.shape[:2]
    upsampled = upsample(heatmap, width, height)
    rng = np.random.default_rng(0)
    out = []
    for relevance in (upsampled, 1.0 - upsampled):  # MoRF, then LeRF
        for percentile in ROAD_PERCENTILES:
            # pytorch-grad-cam's rule: keep what is below the percentile, remove the rest
            removed = relevance >= np.percentile(relevance, percentile)
            out.append(impute(image, removed, rng))
    return np.stack(out)


@dataclass
class Road:
    """Per-image ROAD scores (arrays over the batch)."""

    morf: np.ndarray
    lerf: np.ndarray

    @property
    def combined(self) -> np.ndarray:
        return (self.lerf - self.morf) / 2.0

    def record(self, row: int) -> dict:
        return {"road_morf": round(float(self.morf[row]), 6),
                "road_lerf": round(float(self.lerf[row]), 6),
                "road_combined": round(float(self.combined[row]), 6)}


def road(probability_of, images: np.ndarray, heatmaps: np.ndarray, class_index: np.ndarray,
         original: np.ndarray, batch_size: int = 32) -> Road:
    """ROAD's MoRF and LeRF for a batch (arguments as `faithfulness`'s)."""
    count = len(ROAD_PERCENTILES)
    # The imputations' sparse solves run in C: threads, one per core, overlap them (1.6x
    # on 2 cores). Each photo seeds its own noise, so the order does not matter.
    with ThreadPoolExecutor(max_workers=max(1, min(len(images), os.cpu_count() or 1)),
                            thread_name_prefix="road") as pool:
        stacked = np.concatenate(list(pool.map(road_images, images, heatmaps)))
    classes = np.repeat(np.asarray(class_index, np.int32), 2 * count)
    scores = np.concatenate([probability_of(stacked[i:i + batch_size], classes[i:i + batch_size])
                             for i in range(0, len(stacked), batch_size)])
    change = scores.reshape(len(images), 2, count) - np.asarray(original, np.float64)[:, None,
                                                                                      None]
    return Road(change[:, 0].mean(axis=1), change[:, 1].mean(axis=1))


class RunningMeans:
    """Means of the per-image metrics over a run, in constant memory."""

    KEYS = ("deletion_auc", "insertion_auc", "average_drop", "increase", "road_morf",
            "road_lerf", "road_combined")

    def __init__(self):
        self.count = 0
        self.sums: dict[str, float] = {}

    def add(self, record: dict | None) -> None:
        if not record:
            return
        self.count += 1
        for key in self.KEYS:
            if key in record:
                self.sums[key] = self.sums.get(key, 0.0) + float(record[key])

    def result(self) -> dict | None:
        """Means (``increase`` as a percentage of images), or None before any image."""
        if not self.count:
            return None
        means = {key: total / self.count for key, total in self.sums.items()}
        if "increase" in means:
            means["increase"] *= 100.0
        means["images"] = self.count
        return means
