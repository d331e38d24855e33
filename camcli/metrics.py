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
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from camcli.localise import upsample
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


class RunningMeans:
    """Means of the per-image metrics over a run, in constant memory."""

    KEYS = ("deletion_auc", "insertion_auc", "average_drop", "increase")

    def __init__(self):
        self.count = 0
        self.sums = dict.fromkeys(self.KEYS, 0.0)

    def add(self, record: dict | None) -> None:
        if not record:
            return
        self.count += 1
        for key in self.KEYS:
            self.sums[key] += float(record[key])

    def result(self) -> dict | None:
        """Means (``increase`` as a percentage of images), or None before any image."""
        if not self.count:
            return None
        means = {key: total / self.count for key, total in self.sums.items()}
        means["increase"] *= 100.0
        means["images"] = self.count
        return means
