"""Where a map points, in the photo's pixels: its peak, and the box of the object.

The map is upsampled to the photo's width and height exactly as the overlays are
(``cv2.resize``, bilinear). The **peak** is the pixel of the highest value (the first in
raster order on a tie). The **box** follows the CAM paper (Zhou et al. 2016, section 4):
keep the pixels at or above ``threshold`` × the map's maximum, take the largest
8-connected region of them, and return its bounding box ``[x0, y0, x1, y1]`` — x1 and y1
exclusive, so the box is ``x1 - x0`` pixels wide. A map with no positive value has
neither.
"""

from __future__ import annotations

import cv2
import numpy as np


def upsample(heatmap: np.ndarray, width: int, height: int) -> np.ndarray:
    """The map at the photo's size (bilinear, float32), as the overlays draw it."""
    return cv2.resize(heatmap.astype(np.float32), (width, height),
                      interpolation=cv2.INTER_LINEAR)


def locate(heatmap: np.ndarray, width: int, height: int, box_threshold: float | None = None
           ) -> tuple[list[int] | None, list[int] | None]:
    """Where ``heatmap`` points in a ``width`` x ``height`` photo: its `peak`, and with
    ``box_threshold`` its `box` (else None), from one upsampling."""
    upsampled = upsample(heatmap, width, height)
    return peak(upsampled), None if box_threshold is None else box(upsampled, box_threshold)


def peak(upsampled: np.ndarray) -> list[int] | None:
    """``[x, y]`` of the map's maximum, or None for a map with no positive value."""
    index = int(np.argmax(upsampled))
    y, x = divmod(index, upsampled.shape[1])
    return [x, y] if upsampled.flat[index] > 0 else None


def box(upsampled: np.ndarray, threshold: float) -> list[int] | None:
    """``[x0, y0, x1, y1]`` of the largest region at or above ``threshold`` × the maximum
    (ties between equal areas: the region met first in raster order); None when the map
    has no positive value."""
    found = regions(upsampled, threshold)
    if not found:
        return None
    areas = [area for area, _ in found]
    return found[areas.index(max(areas))][1]


def regions(upsampled: np.ndarray, threshold: float) -> list[tuple[int, list[int]]]:
    """``(area, [x0, y0, x1, y1])`` of every 8-connected region at or above ``threshold``
    × the map's maximum, in raster order of their first pixels; none when the map has no
    positive value."""
    top = float(upsampled.max())
    if top <= 0:
        return []
    mask = (upsampled >= threshold * top).astype(np.uint8)
    count, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    found = []
    for label in range(1, count):  # label 0 is the background
        x0, y0 = int(stats[label, cv2.CC_STAT_LEFT]), int(stats[label, cv2.CC_STAT_TOP])
        found.append((int(stats[label, cv2.CC_STAT_AREA]),
                      [x0, y0, x0 + int(stats[label, cv2.CC_STAT_WIDTH]),
                       y0 + int(stats[label, cv2.CC_STAT_HEIGHT])]))
    return found


def iou(a, b) -> float:
    """Intersection over union of two ``[x0, y0, x1, y1]`` boxes (x1, y1 exclusive)."""
    width = min(a[2], b[2]) - max(a[0], b[0])
    height = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(0.0, width) * max(0.0, height)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def distance_to_box(point, box_) -> float:
    """Euclidean distance from pixel ``[x, y]`` to a box (0 inside it). The box covers
    pixels x0..x1-1 and y0..y1-1."""
    dx = max(box_[0] - point[0], 0, point[0] - (box_[2] - 1))
    dy = max(box_[1] - point[1], 0, point[1] - (box_[3] - 1))
    return float(np.hypot(dx, dy))
