"""Input preprocessing, as NumPy functions on float32 RGB batches in [0, 255].

The modes match `keras.applications.imagenet_utils.preprocess_input`:
``caffe`` (RGB->BGR, ImageNet mean subtracted; ResNet50, VGG16), ``tf`` (scaled to [-1, 1];
MobileNetV2), ``torch`` (scaled to [0, 1], ImageNet mean/std), plus ``scale01`` ([0, 1]) and
``none`` (unchanged; models that normalise inside, e.g. Keras' EfficientNet).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

_CAFFE_MEAN_BGR = np.array([103.939, 116.779, 123.68], dtype=np.float32)
_TORCH_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
_TORCH_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def _caffe(x: np.ndarray) -> np.ndarray:
    return x[..., ::-1] - _CAFFE_MEAN_BGR


def _tf(x: np.ndarray) -> np.ndarray:
    return x / 127.5 - 1.0


def _torch(x: np.ndarray) -> np.ndarray:
    return (x / 255.0 - _TORCH_MEAN) / _TORCH_STD


def _scale01(x: np.ndarray) -> np.ndarray:
    return x / 255.0


def _none(x: np.ndarray) -> np.ndarray:
    return x


PREPROCESSORS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "caffe": _caffe,
    "tf": _tf,
    "torch": _torch,
    "scale01": _scale01,
    "none": _none,
}


def preprocess(mode: str, batch: np.ndarray) -> np.ndarray:
    """Apply preprocessing ``mode`` to a float32 ``(n, h, w, 3)`` RGB batch in [0, 255]."""
    return np.ascontiguousarray(PREPROCESSORS[mode](batch.astype(np.float32, copy=False)),
                                dtype=np.float32)
