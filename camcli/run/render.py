"""Turning a low-resolution map into a picture.

The map (values in [0, 1]) is resized with OpenCV to the photo's own width and height,
coloured with an OpenCV colour map and blended over the photo:
``overlay = alpha * coloured_map + (1 - alpha) * photo``.
"""

from __future__ import annotations

import io

import cv2
import numpy as np

from camcli.analysis.localise import upsample

#: OpenCV colour maps by lower-case name (jet, turbo, viridis, inferno, ...).
COLORMAPS: dict[str, int] = {
    name[len("COLORMAP_"):].lower(): getattr(cv2, name)
    for name in dir(cv2)
    if name.startswith("COLORMAP_")
}


def colorize(heatmap: np.ndarray, size: tuple[int, int], colormap: str) -> np.ndarray:
    """Resize a [0, 1] map to ``size`` = (width, height) and colour it; returns BGR uint8."""
    resized = upsample(heatmap, *size)
    levels = np.clip(np.rint(resized * 255.0), 0, 255).astype(np.uint8)
    return cv2.applyColorMap(levels, COLORMAPS[colormap])


def overlay(rgb: np.ndarray, heatmap: np.ndarray, alpha: float, colormap: str) -> np.ndarray:
    """Blend the coloured ``heatmap`` over the RGB photo; returns a BGR uint8 image of the
    photo's size (ready for `cv2.imencode`)."""
    height, width = rgb.shape[:2]
    coloured = colorize(heatmap, (width, height), colormap)
    photo = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    return cv2.addWeighted(coloured, float(alpha), photo, 1.0 - float(alpha), 0.0)


def encode_jpeg(bgr: np.ndarray, quality: int) -> bytes:
    ok, buffer = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise OSError("JPEG encoding failed")
    return buffer.tobytes()


def encode_npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def panel(rgb: np.ndarray, heatmap: np.ndarray, caption: str, alpha: float, colormap: str,
          box: list[int] | None = None) -> np.ndarray:
    """original | heatmap | overlay side by side under a caption bar; BGR uint8.

    Each pane has the photo's size; the bar's height follows the photo's width. ``box``
    (`camcli.analysis.localise.box`) is drawn on the overlay pane.
    """
    from PIL import Image, ImageDraw, ImageFont

    height, width = rgb.shape[:2]
    photo = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    coloured = colorize(heatmap, (width, height), colormap)
    blended = cv2.addWeighted(coloured, float(alpha), photo, 1.0 - float(alpha), 0.0)
    if box is not None:
        draw_box(blended, box)
    panes = np.hstack([photo, coloured, blended])
    font_size = max(12, min(48, 3 * width // 40))
    bar_height = int(font_size * 1.8)
    bar = Image.new("RGB", (panes.shape[1], bar_height), (32, 32, 32))
    font = ImageFont.load_default(size=font_size)
    ImageDraw.Draw(bar).text((font_size // 2, (bar_height - font_size) // 2), caption,
                             fill=(255, 255, 255), font=font)
    return np.vstack([cv2.cvtColor(np.asarray(bar), cv2.COLOR_RGB2BGR), panes])


def draw_box(bgr: np.ndarray, box_: list[int]) -> np.ndarray:
    """The box drawn on a BGR picture: white over a dark outline, visible on any map."""
    thickness = max(2, round(min(bgr.shape[:2]) / 150))
    corner0 = (box_[0], box_[1])
    corner1 = (box_[2] - 1, box_[3] - 1)
    cv2.rectangle(bgr, corner0, corner1, (0, 0, 0), thickness + 2)
    cv2.rectangle(bgr, corner0, corner1, (255, 255, 255), thickness)
    return bgr
