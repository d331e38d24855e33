"""Capture by call interception: a tensor inside a layer that is no graph node.

keras-hub's encoders hold their transformer blocks as tracked sublayers and call them in
Python (``for block in self.blocks: x = block(x)``). The blocks are no nodes of any
graph: ``block.output`` raises "never been called", and a ``keras.Model`` built on them
runs the encoder twice and has no gradient. So camcli wraps the block's ``call`` for the
length of one forward pass, keeps the tensor it receives (``:input``) or returns, and
restores ``call`` afterwards, also on error. The tensor is then part of the very forward
pass that gives the logits, and a gradient tape differentiates the score with respect to
it like any other.

The same wrapping, on every sublayer at once, measures the shapes of a probe pass
(`probe`), which is how ``camcli layers`` lists the blocks.

A ``keras.layers.MultiHeadAttention``'s attention probabilities are captured the same way,
one level down (`attending`): its ``_compute_attention`` is wrapped to return its scores
(``return_attention_scores``), which turns Keras' fused dot-product path off for that
pass; the probabilities it keeps are the ones its output is computed from, so the tape
differentiates the score with respect to them too.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

#: Which tensor of a layer's call a target is: what it returns, what it receives, or (a
#: MultiHeadAttention) its attention probabilities.
SIDES = ("output", "input", "attention")


def first_tensor(args: tuple, kwargs: dict):
    """The tensor a layer's call receives first (its main input)."""
    import keras

    for value in keras.tree.flatten((args, kwargs)):
        if hasattr(value, "shape") and hasattr(value, "dtype"):
            return value
    return None


def _first_output(output):
    import keras

    flat = keras.tree.flatten(output)
    return flat[0] if flat and hasattr(flat[0], "shape") else None


@contextlib.contextmanager
def intercepting(layers: Sequence[Any], hook, before=None) -> Iterator[None]:
    """While inside, every call of ``layers[i]`` reports ``hook(i, args, kwargs,
    output)`` (and first ``before(i)`` when given); each layer's own ``call`` is put back
    on leaving, whatever happens."""
    saved = []
    try:
        for number, layer in enumerate(layers):
            own = layer.__dict__.get("call")  # an instance attribute (rare), else None
            original = layer.call

            def wrapped(*args, _number=number, _original=original, **kwargs):
                if before is not None:
                    before(_number)
                output = _original(*args, **kwargs)
                hook(_number, args, kwargs, output)
                return output

            # object.__setattr__: Keras tracks what is set on a layer; this is no state.
            object.__setattr__(layer, "call", wrapped)
            saved.append((layer, own))
        yield
    finally:
        _restore(saved)


def _restore(saved: list, name: str = "call") -> None:
    for layer, own in reversed(saved):
        if own is None:
            object.__delattr__(layer, name)
        else:
            object.__setattr__(layer, name, own)


@contextlib.contextmanager
def attending(layers: Sequence[Any], hook) -> Iterator[None]:
    """While inside, every call of the MultiHeadAttention ``layers[i]`` reports
    ``hook(i, probabilities)``: its attention probabilities ``(batch, heads, queries,
    keys)``, computed without Keras' fused path (flash attention off for the pass); each
    layer's own ``_compute_attention`` and flash setting are put back on leaving."""
    saved, flash = [], []
    try:
        for number, layer in enumerate(layers):
            own = layer.__dict__.get("_compute_attention")
            original = layer._compute_attention

            def wrapped(query, key, value, attention_mask=None, training=None,
                        return_attention_scores=False, *args, _number=number,
                        _original=original, **kwargs):
                output, scores = _original(query, key, value, attention_mask, training, True,
                                           *args, **kwargs)
                hook(_number, scores)
                return output, scores

            object.__setattr__(layer, "_compute_attention", wrapped)
            saved.append((layer, own))
            flash.append((layer, layer._flash_attention))
            object.__setattr__(layer, "_flash_attention", False)
        yield
    finally:
        for layer, setting in flash:
            object.__setattr__(layer, "_flash_attention", setting)
        _restore(saved, "_compute_attention")


@contextlib.contextmanager
def replacing(layer, side: str, tensor) -> Iterator[None]:
    """While inside, ``layer``'s call receives (``side="input"``) or returns (``output``)
    ``tensor`` instead of its own; its ``call`` is put back on leaving."""
    if side not in ("output", "input"):
        raise ValueError(f"side must be output or input, got {side!r}")
    own = layer.__dict__.get("call")
    original = layer.call

    def wrapped(*args, **kwargs):
        if side == "output":
            return tensor
        first = first_tensor(args, kwargs)
        args = tuple(tensor if a is first else a for a in args)
        kwargs = {k: tensor if v is first else v for k, v in kwargs.items()}
        return original(*args, **kwargs)

    object.__setattr__(layer, "call", wrapped)
    try:
        yield
    finally:
        _restore([(layer, own)])


class Captured:
    """The tensors of one forward pass: ``sites[i] = (layer, side)``; after the pass,
    ``tensors[i]`` is what that layer received or returned (in its last call)."""

    def __init__(self, sites: Sequence[tuple[Any, str]]):
        self.sites = list(sites)
        self.tensors: list = [None] * len(self.sites)

    def _hook(self, number, args, kwargs, output):
        for index, side in self._by_layer[number]:
            self.tensors[index] = first_tensor(args, kwargs) if side == "input" else \
                _first_output(output)

    def _attention_hook(self, number, probabilities):
        self.tensors[self._attention_index[number]] = probabilities

    @contextlib.contextmanager
    def during(self) -> Iterator[Captured]:
        """Capture during the ``with`` block (one forward pass of the model); with no
        sites, nothing is wrapped."""
        layers: list = []
        self._by_layer: list[list[tuple[int, str]]] = []
        attending_layers, self._attention_index = [], []
        for index, (layer, side) in enumerate(self.sites):
            if side not in SIDES:
                raise ValueError(f"side must be one of {SIDES}, got {side!r}")
            if side == "attention":
                attending_layers.append(layer)
                self._attention_index.append(index)
                continue
            number = next((n for n, known in enumerate(layers) if known is layer), None)
            if number is None:
                layers.append(layer)
                self._by_layer.append([])
                number = len(layers) - 1
            self._by_layer[number].append((index, side))
        with intercepting(layers, self._hook), \
                attending(attending_layers, self._attention_hook):
            yield self


@dataclass
class Seen:
    """One sublayer as a probe pass saw it (its last call).

    Attributes:
        layer: the layer.
        path: its address, '/'-separated.
        order: when its call began, counted over the pass (parents before children).
        input_shape / output_shape: the shapes of its first input and first output
            tensors (None when it had none).
    """

    layer: Any
    path: str
    order: int
    input_shape: tuple | None = None
    output_shape: tuple | None = None

    def shape(self, side: str) -> tuple | None:
        """The shape of what the call received (``input``) or returned (``output``)."""
        return self.output_shape if side == "output" else self.input_shape


def probe(run, layers: Sequence[tuple[Any, str]]) -> list[Seen]:
    """Call ``run()`` (one forward pass) with every ``(layer, path)`` intercepted; the
    layers called, in the order their calls began (parents before children)."""
    seen: dict[int, Seen] = {}
    started = []

    def begin(number):
        layer, path = layers[number]
        started.append(number)
        seen[number] = Seen(layer, path, len(started))

    def hook(number, args, kwargs, output):
        entry = seen[number]
        entry.input_shape = _shape(first_tensor(args, kwargs))
        entry.output_shape = _shape(_first_output(output))

    # The probe calls nested functional models with a tensor where they name their
    # inputs; Keras warns of that, though it is what their outer model does too.
    with intercepting([layer for layer, _ in layers], hook, before=begin), \
            warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        run()
    return sorted(seen.values(), key=lambda s: s.order)


def _shape(tensor) -> tuple | None:
    if tensor is None or not hasattr(tensor, "shape"):
        return None
    return tuple(None if d is None else int(d) for d in tensor.shape)


def rectifiers(model) -> list[tuple[Any, str]]:
    """Every rectifier of ``model`` (nested models and sublayers included), as ``(layer,
    how)``: ``"call"`` for a ``keras.layers.ReLU`` layer without slope or threshold (its
    ``max_value`` kept: ReLU6), ``"activation"`` for a layer whose ``activation`` is
    ``relu`` or ``relu6`` (an ``Activation`` layer, a convolution or dense layer with its
    own)."""
    import keras

    found = []
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, keras.layers.ReLU):
            if not layer.negative_slope and not layer.threshold:
                found.append((layer, "call"))
        elif getattr(getattr(layer, "activation", None), "__name__", None) in ("relu",
                                                                                "relu6"):
            found.append((layer, "activation"))
    return found


def guided_relu(x, ceiling: float | None = None):
    """ReLU (capped at ``ceiling``: ReLU6) whose backward pass also zeroes the negative
    gradients (Springenberg et al.'s guided backpropagation): ``dy · [0 < x < ceiling] ·
    [dy > 0]``."""
    import tensorflow as tf

    @tf.custom_gradient
    def rectified(inputs):
        passing = inputs > 0
        if ceiling is not None:
            passing = tf.logical_and(passing, inputs < ceiling)
        output = tf.nn.relu(inputs) if ceiling is None else tf.minimum(tf.nn.relu(inputs),
                                                                        ceiling)

        def backward(upstream):
            keep = tf.logical_and(passing, upstream > 0)
            return tf.where(keep, upstream, tf.zeros_like(upstream))

        return output, backward

    return rectified(x)


@contextlib.contextmanager
def guided(found: list[tuple[Any, str]]) -> Iterator[None]:
    """While inside, the rectifiers ``found`` (`rectifiers`) pass gradients back as
    `guided_relu` does; each layer's own ``call`` or ``activation`` is put back on
    leaving, whatever happens."""
    calls, activations = [], []
    try:
        for layer, how in found:
            if how == "call":
                own = layer.__dict__.get("call")
                ceiling = None if layer.max_value is None else float(layer.max_value)
                object.__setattr__(layer, "call", lambda inputs, *_, _c=ceiling, **__:
                                   guided_relu(inputs, _c))
                calls.append((layer, own))
            else:
                ceiling = 6.0 if layer.activation.__name__ == "relu6" else None
                activations.append((layer, layer.activation))
                object.__setattr__(layer, "activation",
                                   lambda inputs, _c=ceiling: guided_relu(inputs, _c))
        yield
    finally:
        for layer, activation in reversed(activations):
            object.__setattr__(layer, "activation", activation)
        _restore(calls)
