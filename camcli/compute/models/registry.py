"""The built-in models: a `ModelSpec` per ``--model`` name (builder, input size,
preprocessing, default target layer); `camcli.options.DEFAULT_MODEL` names the one that
works offline.

Nothing here imports TensorFlow; ``camcli models`` lists the registry instantly.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ModelSpec:
    """A built-in model.

    Attributes:
        name: the --model name.
        build: ``build(weights)`` returns the Keras model; ``weights`` is "imagenet" or None.
        input_size: (height, width) the images are resized to.
        preprocess: a key of `camcli.compute.models.preprocess.PREPROCESSORS`.
        target_layer: the layer explained by default.
        cam: whether the head after ``target_layer`` is GAP -> Dense (CAM applies).
        description: one line for ``camcli models``.
        availability: says whether the ImageNet weights are here, for ``camcli models``.
    """

    name: str
    build: Callable[[str | None], Any]
    input_size: tuple[int, int]
    preprocess: str
    target_layer: str
    cam: bool
    description: str
    availability: Callable[[], str]


def _applications(constructor: str) -> Callable[[str | None], Any]:
    def build(weights: str | None):
        import keras

        return getattr(keras.applications, constructor)(weights=weights)

    return build


def _keras_download(file_name: str) -> Callable[[], str]:
    def availability() -> str:
        home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
        folders = [os.path.join(home, "models"), os.path.join(tempfile.gettempdir(), ".keras",
                                                             "models")]
        if any(os.path.isfile(os.path.join(f, file_name)) for f in folders):
            return "cached (Keras download)"
        return "needs a download (internet, once)"

    return availability


def _lite(attribute: str):
    def call(*args):
        from camcli.compute.models import efficientnet_lite

        return getattr(efficientnet_lite, attribute)(*args)

    return call


BUILTIN: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec("efficientnet-lite0", _lite("pretrained"), (224, 224), "none",
                  "top_activation", True,
                  "EfficientNet-Lite0 (Tan & Le 2019; TF Lite weights), works offline",
                  _lite("availability")),
        ModelSpec("resnet50", _applications("ResNet50"), (224, 224), "caffe",
                  "conv5_block3_out", True, "ResNet-50 (He et al. 2015), keras.applications",
                  _keras_download("resnet50_weights_tf_dim_ordering_tf_kernels.h5")),
        ModelSpec("vgg16", _applications("VGG16"), (224, 224), "caffe",
                  "block5_conv3", False, "VGG-16 (Simonyan & Zisserman 2014), keras.applications",
                  _keras_download("vgg16_weights_tf_dim_ordering_tf_kernels.h5")),
        ModelSpec("mobilenet_v2", _applications("MobileNetV2"), (224, 224), "tf",
                  "out_relu", True, "MobileNetV2 (Sandler et al. 2018), keras.applications",
                  _keras_download("mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224.h5")),
        ModelSpec("efficientnetb0", _applications("EfficientNetB0"), (224, 224), "none",
                  "top_activation", True, "EfficientNet-B0 (Tan & Le 2019), keras.applications",
                  _keras_download("efficientnetb0.h5")),
    )
}

