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
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

#: Which tensor of a layer's call a target is: what it returns, or what it receives.
SIDES = ("output", "input")


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


def _restore(saved: list) -> None:
    for layer, own in reversed(saved):
        if own is None:
            object.__delattr__(layer, "call")
        else:
            object.__setattr__(layer, "call", own)


@contextlib.contextmanager
def replacing(layer, side: str, tensor) -> Iterator[None]:
    """While inside, ``layer``'s call receives (``side="input"``) or returns (``output``)
    ``tensor`` instead of its own; its ``call`` is put back on leaving."""
    if side not in SIDES:
        raise ValueError(f"side must be one of {SIDES}, got {side!r}")
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

    @contextlib.contextmanager
    def during(self) -> Iterator[Captured]:
        """Capture during the ``with`` block (one forward pass of the model); with no
        sites, nothing is wrapped."""
        layers: list = []
        self._by_layer: list[list[tuple[int, str]]] = []
        for index, (layer, side) in enumerate(self.sites):
            if side not in SIDES:
                raise ValueError(f"side must be one of {SIDES}, got {side!r}")
            number = next((n for n, known in enumerate(layers) if known is layer), None)
            if number is None:
                layers.append(layer)
                self._by_layer.append([])
                number = len(layers) - 1
            self._by_layer[number].append((index, side))
        with intercepting(layers, self._hook):
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
