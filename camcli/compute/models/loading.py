"""Loading a model: a built-in by name (`camcli.compute.models.registry`) or a ``.keras`` / ``.h5``
file, into one complete, frozen `LoadedModel`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from typing import Any

from camcli.compute.backend import apply_precision, tensorflow
from camcli.compute.models.metadata import read_metadata
from camcli.compute.models.preprocess import PREPROCESSORS
from camcli.compute.models.registry import BUILTIN, ModelSpec
from camcli.errors import CamcliError, ModelError, UnknownModel, UsageProblem
from camcli.io import labels as labels_mod
from camcli.io import locations
from camcli.io.storage import Storage, resolved
from camcli.options import DEFAULT_MODEL

log = logging.getLogger("camcli")

MODEL_FILE_SUFFIXES = (".keras", ".h5", ".hdf5")
DEFAULT_INPUT_SIZE = (224, 224)


@dataclass(frozen=True)
class LoadedModel:
    """A Keras model with what camcli needs to feed and read it.

    Attributes:
        name: the built-in name, or the model file's absolute path.
        model: the Keras model.
        input_size: (height, width) images are resized to.
        preprocess: preprocessing mode applied after resizing.
        labels: class names.
        default_layer: the layer explained when no layer is asked for (None: automatic).
        precision: the compute precision the model runs in (`camcli.compute.backend`).
    """

    name: str
    model: Any
    input_size: tuple[int, int]
    preprocess: str
    labels: labels_mod.Labels
    default_layer: str | None = None
    precision: str = "fp32"


@dataclass(frozen=True)
class _Found:
    """What a built-in or a model file gives before the caller's choices apply."""

    name: str
    model: Any
    input_size: tuple[int, int]
    preprocess: str
    default_layer: str | None
    labels: labels_mod.Labels | None = None  # the file's own names (camcli train)


def load(
    name: str = DEFAULT_MODEL,
    weights: str | None = "imagenet",
    preprocess: str | None = None,
    labels_file: str | None = None,
    unsafe_model_code: bool = False,
    precision: str = "fp32",
    storage: Storage | None = None,
) -> LoadedModel:
    """Load a built-in model by name or a ``.keras`` / ``.h5`` model file.

    Args:
        name: a key of `BUILTIN` or a path to a model file.
        weights: for built-ins: ``"imagenet"`` (downloaded once by Keras), ``None`` /
            ``"none"`` (random, for tests), or a Keras weights file.
        preprocess: override the preprocessing (required knowledge for model files;
            default for files: ``none``).
        labels_file: one class name per line; default: the names a file saved by
            ``camcli train`` carries, ImageNet names for 1000-class models, else
            ``class_<i>``.
        unsafe_model_code: load model files with Keras' ``safe_mode=False``, running any
            Python code (``Lambda`` layers) stored in them. Only for files you trust.
        precision: ``fp32``, ``bf16`` or ``fp16`` (already resolved, see
            `camcli.compute.backend.resolve_precision`): set on every layer before anything is
            built on the model.
        storage: where a model file or labels file named by a URL is read.

    Raises:
        UnknownModel: neither a built-in name nor an existing model file.
        ModelError: the weights could not be downloaded or the file could not be loaded.
    """
    _check_preprocess(preprocess)
    tensorflow()
    storage = resolved(storage)
    if name in BUILTIN:
        found = _builtin(BUILTIN[name], weights)
    elif locations.is_url(name) or os.path.isfile(name):
        if weights not in (None, "imagenet", "none"):
            raise UsageProblem("{weights} applies to built-in models; a model file has its "
                               "own", ("weights",))
        found = _file(name, unsafe_model_code, storage)
    else:
        raise _not_found(name)
    apply_precision(found.model, precision)
    return LoadedModel(found.name, found.model, found.input_size,
                       preprocess if preprocess is not None else found.preprocess,
                       _labels(found, labels_file, storage), found.default_layer, precision)


def _check_preprocess(preprocess: str | None) -> None:
    """Raises:
        UsageProblem: ``preprocess`` names no preprocessing mode."""
    if preprocess is not None and preprocess not in PREPROCESSORS:
        raise UsageProblem(
            f"unknown preprocessing {preprocess!r}: choose from {', '.join(PREPROCESSORS)}"
        )


def image_input_size(model, said: str) -> tuple[int, int]:
    """The ``(height, width)`` images are resized to for ``model`` (its input's, else
    `DEFAULT_INPUT_SIZE`).

    Raises:
        ModelError: the model (``said``: how a message names it) takes no image.
    """
    if not getattr(model, "inputs", None):
        raise ModelError(f"{said} holds a model without a defined input shape")
    shape = tuple(model.inputs[0].shape)
    if len(shape) != 4 or shape[-1] not in (3, None):
        raise ModelError(f"{said}: expected an image input (batch, height, width, 3), got "
                         f"{shape}")
    height, width = shape[1], shape[2]
    return (height, width) if height and width else DEFAULT_INPUT_SIZE


def in_memory(model, preprocess: str | None = None, labels_file: str | None = None,
              storage: Storage | None = None) -> LoadedModel:
    """A Keras model object already built (the Python API), as a model file of it would
    load: preprocessing ``none`` unless told, labels as `load` finds them. Nothing is
    saved or copied; the model runs in its own precision.

    Raises:
        UsageProblem: an unknown preprocessing; ModelError: the model takes no image.
    """
    _check_preprocess(preprocess)
    name = getattr(model, "name", type(model).__name__)
    found = _Found(name, model, image_input_size(model, f"Keras model {name!r}"),
                   preprocess or "none", None)
    return LoadedModel(found.name, model, found.input_size, found.preprocess,
                       _labels(found, labels_file, resolved(storage)))


def architecture(name: str, unsafe_model_code: bool = False, storage: Storage | None = None
                 ) -> tuple[Any, str | None]:
    """A model's layers without its weights (``camcli layers``): the Keras model (a
    built-in with random weights, nothing downloaded; a file as saved) and its registered
    target layer, or None.

    Raises:
        UnknownModel, ModelError: as `load`.
    """
    tensorflow()
    if name in BUILTIN:
        spec = BUILTIN[name]
        with contextlib.redirect_stdout(sys.stderr):
            return spec.build(None), spec.target_layer
    if locations.is_url(name) or os.path.isfile(name):
        found = _file(name, unsafe_model_code, resolved(storage))
        return found.model, found.default_layer
    raise _not_found(name)


def _not_found(name: str) -> UnknownModel:
    if name.lower().endswith(MODEL_FILE_SUFFIXES) or os.sep in name:
        return UnknownModel(f"model file not found: {name}")
    return UnknownModel(f"unknown model {name!r}: use a built-in name ({', '.join(BUILTIN)}) "
                        "or the path of a .keras / .h5 file")


def _labels(found: _Found, labels_file: str | None, storage: Storage) -> labels_mod.Labels:
    num_classes = int(found.model.outputs[0].shape[-1])
    if labels_file:
        names = labels_mod.from_file(labels_file, storage)
        if len(names) != num_classes:
            log.warning("labels file %s has %d names for a model with %d classes",
                        labels_file, len(names), num_classes)
        return names
    if found.labels is not None and len(found.labels) == num_classes:
        return found.labels
    if num_classes == 1000:
        return labels_mod.imagenet()
    return labels_mod.generic(num_classes)


def _builtin(spec: ModelSpec, weights: str | None) -> _Found:
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
    return _Found(spec.name, model, spec.input_size, spec.preprocess, spec.target_layer)


#: The extra that installs keras-hub, whose models a ``.keras`` file may hold.
HUB_EXTRA = "pip install 'camcli[hub]'"


def _needs_hub(path: str) -> None:
    """Refuse, naming the extra, a ``.keras`` file of keras-hub layers without keras-hub
    (Keras imports it by itself while loading when it is there)."""
    import importlib.util
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            config = archive.read("config.json").decode("utf-8", "replace")
    except (OSError, KeyError, zipfile.BadZipFile):
        return  # not a .keras archive: Keras says what is wrong with it
    if '"keras_hub' not in config:
        return
    try:
        found = importlib.util.find_spec("keras_hub") is not None
    except ValueError:  # imported as None: blocked
        found = False
    if not found:
        raise ModelError(f"model file {path} holds a keras-hub model, and keras-hub is not "
                         f"installed: {HUB_EXTRA}")


def _file(path: str, unsafe_model_code: bool, storage: Storage) -> _Found:
    """A model file; one in an object store (a URL) is read through its store into a local
    temporary copy, which Keras loads whole, and keeps the URL as its name."""
    if not locations.is_url(path):
        return _local_file(path, unsafe_model_code)
    store = storage.store(path)
    if not store.isfile(path):
        raise UnknownModel(f"model file not found: {path}")
    with tempfile.TemporaryDirectory(prefix="camcli-model-") as folder:
        local = os.path.join(folder, locations.basename(path))
        try:
            with store.open(path) as source, open(local, "wb") as target:
                shutil.copyfileobj(source, target, 1 << 20)
        except OSError as exc:
            raise ModelError(f"cannot read model file {path}: {exc.strerror or exc}") from None
        found = _local_file(local, unsafe_model_code, shown=path)
    return dataclasses.replace(found, name=locations.absolute(path))


def _local_file(path: str, unsafe_model_code: bool = False, shown: str | None = None
                ) -> _Found:
    """A local model file (``shown``: its name in messages, when a copy of another)."""
    import keras

    said = shown or path

    _needs_hub(path)
    if unsafe_model_code:
        log.warning("loading %s with unsafe model code allowed: Python code stored in the "
                    "file will run", said)
    try:
        model = keras.saving.load_model(path, compile=False, safe_mode=not unsafe_model_code)
    except Exception as exc:
        text = str(exc).strip()
        if "safe_mode" in text:
            raise ModelError(
                f"cannot load model file {said}: it holds Python code (a Lambda layer), which "
                "camcli does not run by default; if you trust the file, pass "
                "{unsafe_model_code}", ("unsafe_model_code",)
            ) from None
        first_line = text.splitlines()[0] if text else type(exc).__name__
        raise ModelError(f"cannot load model file {said}: {first_line}") from None
    input_size = image_input_size(model, f"model file {said}")
    # The absolute path names the model in records: the same file from any folder.
    name = os.path.abspath(path)
    meta = read_metadata(path)
    if not meta:
        return _Found(name, model, input_size, "none", None)
    log.info("model file %s: %d class names, preprocessing %s, target layer %s (saved "
             "by camcli train)", path, len(meta["labels"]), meta["preprocess"],
             meta["target_layer"])
    return _Found(name, model, input_size, meta["preprocess"], meta["target_layer"],
                  labels_mod.Labels(names=tuple(meta["labels"])))
