"""Reading photos: decode any common file into an upright 8-bit RGB array.

Everything a real dataset contains goes through `load_rgb`: EXIF orientation is applied;
grayscale, 16-bit, CMYK, palette and images with transparency become plain RGB; animated
files give their first frame. Anything unreadable raises `ImageError` naming the reason.
"""

from __future__ import annotations

import io
import re
import warnings

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from camcli.errors import ImageError
from camcli.io.local import NotARegularFile
from camcli.io.storage import Storage, resolved

#: Extensions `batch` picks up by default (compared case-insensitively).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")

#: Pillow's decompression-bomb threshold; camcli refuses images above it instead of warning.
MAX_PIXELS = Image.MAX_IMAGE_PIXELS or 89_478_485

_BACKGROUND = (255, 255, 255)  # transparent pixels are shown on white, as a viewer would


def photo_size(path: str, storage: Storage | None = None) -> tuple[int, int]:
    """``(width, height)`` of an image, from its header (nothing decoded).

    Raises:
        OSError: it cannot be read, or is no image Pillow knows.
    """
    with resolved(storage).store(path).open(path, "rb") as f, Image.open(f) as image:
        return image.size


def load_rgb(path: str, storage: Storage | None = None) -> np.ndarray:
    """Decode an image file into an upright ``(height, width, 3)`` uint8 RGB array.

    The file is read whole through its store first, so a store's failure (a bucket's
    lasting 5xx after the retries, a reset connection) is told apart from bad image data.

    Raises:
        ImageError: the file is missing, not a regular file, unreadable, empty, not an
            image, truncated or too large.
    """
    try:
        with resolved(storage).store(path).open(path, "rb") as f:
            data = f.read()
    except NotARegularFile:  # a FIFO would block a read for ever
        raise ImageError(path, "not a regular file") from None
    except FileNotFoundError:
        raise ImageError(path, "file not found") from None
    except IsADirectoryError:
        raise ImageError(path, "is a directory") from None
    except PermissionError:
        raise ImageError(path, "permission denied") from None
    except OSError as exc:
        raise ImageError(path, f"cannot read it ({exc.strerror or exc})") from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                _check_size(path, image)
                image.load()
                image = ImageOps.exif_transpose(image)
                return to_rgb(image)
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise ImageError(path, "empty file" if not data else "not a recognised image format") \
            from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        found = re.search(r"\((\d+) pixels\)", str(exc))
        size = f"{int(found.group(1)):,} pixels" if found else "too many pixels"
        raise ImageError(
            path, f"image too large ({size}; the limit is {MAX_PIXELS:,}, a guard against "
            "decompression bombs)"
        ) from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        # Pillow reports truncated or corrupt data as OSError ("image file is truncated",
        # "broken data stream") and malformed headers as SyntaxError or ValueError.
        raise ImageError(path, f"corrupt image data ({exc})") from None


def _check_size(path: str, image: Image.Image) -> None:
    width, height = image.size
    if width < 1 or height < 1:
        raise ImageError(path, f"image has no pixels ({width}x{height})")


def to_rgb(image: Image.Image) -> np.ndarray:
    """A PIL image of any mode as RGB uint8 ``(height, width, 3)``: 16-bit and float grey
    keep their range, transparency is laid on the background."""
    mode = image.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        # 16-bit (and 32-bit integer) grayscale: keep the full range instead of clipping.
        gray = np.asarray(image, dtype=np.float64)
        top = 65535.0 if gray.max(initial=0) > 255 or mode.startswith("I;16") else 255.0
        gray8 = np.clip(np.rint(gray * (255.0 / top)), 0, 255).astype(np.uint8)
        return np.ascontiguousarray(np.repeat(gray8[:, :, None], 3, axis=2))
    if mode == "F":
        gray = np.asarray(image, dtype=np.float64)
        lo, hi = float(gray.min(initial=0)), float(gray.max(initial=0))
        scale = 255.0 / (hi - lo) if hi > lo else 0.0
        gray8 = np.clip(np.rint((gray - lo) * scale), 0, 255).astype(np.uint8)
        return np.ascontiguousarray(np.repeat(gray8[:, :, None], 3, axis=2))
    if mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, _BACKGROUND + (255,))
        return np.asarray(Image.alpha_composite(background, rgba).convert("RGB"))
    if mode != "RGB":
        image = image.convert("RGB")
    return np.asarray(image)


def resize_for_model(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize an RGB image to the model's ``(height, width)``; returns float32 in [0, 255].

    Shrinking uses area averaging (no aliasing); enlarging uses bilinear interpolation.
    A large photo is first reduced by a whole factor (OpenCV's fast exact box filter), then
    area-resampled to the size: half the cost of one area resize, on average within two
    grey levels of it (photos of 640x480 to 741x500).
    """
    height, width = size
    shrinking = rgb.shape[0] > height or rgb.shape[1] > width
    if not shrinking:
        return cv2.resize(rgb, (width, height), interpolation=cv2.INTER_LINEAR).astype(np.float32)
    factor = min(rgb.shape[0] // height, rgb.shape[1] // width)
    if factor >= 2:
        rgb = cv2.resize(rgb, (rgb.shape[1] // factor, rgb.shape[0] // factor),
                         interpolation=cv2.INTER_AREA)
    return cv2.resize(rgb, (width, height), interpolation=cv2.INTER_AREA).astype(np.float32)
