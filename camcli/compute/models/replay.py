"""The replay: a Keras model re-run on a fresh input, layer by layer, every call recorded.

Keras 3 cannot build ``Model(model.inputs, [inner_layer.output, model.output])`` when the
layer sits inside a nested backbone (``Sequential([ResNet50(include_top=False), ...])``):
the inner layer's output belongs to the backbone's own graph. So camcli *replays* the
model on a fresh input, descending into every nested Sequential or Functional model (the
same graph walk ``keras.models.clone_model`` does, but keeping the original layers and
weights). Every leaf layer's output is then a tensor of one flat graph (a `Call`).

Layers a subclassed layer tracks and calls in Python (keras-hub's transformer blocks) are
no graph nodes: a probe pass (`camcli.compute.models.capture.probe`) finds them and their
shapes, and they follow the layer that calls them, as `Call`s without a tensor.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from camcli.compute.backend import tensorflow
from camcli.compute.models import capture
from camcli.errors import LayerError


@dataclass
class Call:
    layer: Any
    path: str
    inputs: list
    output: Any
    #: the nested models above the layer, outermost first (their configs say token grids)
    ancestors: tuple = ()
    #: None for a graph node; for a layer reached by call interception, its probe record
    seen: capture.Seen | None = None

    @property
    def intercepted(self) -> bool:
        return self.seen is not None

    def shape(self, side: str = "output") -> tuple | None:
        """The shape of the layer's output (or input), batch first."""
        if self.seen is not None:
            shape = self.seen.shape(side)
            return None if shape is None else (None, *shape[1:])
        tensor = self.output if side == "output" else (self.inputs[0] if self.inputs else None)
        return tuple(tensor.shape) if hasattr(tensor, "shape") else None


def outputs(result) -> list:
    return list(result) if isinstance(result, (list, tuple)) else [result]


def _is_sequential(layer) -> bool:
    import keras

    return isinstance(layer, keras.Sequential)


def _is_functional(layer) -> bool:
    # keras.src.models.functional.Functional is private; test for what the replay needs.
    import keras

    return isinstance(layer, keras.Model) and hasattr(layer, "_run_through_graph") and hasattr(
        layer, "_nodes_by_depth"
    )


class _Replay:
    """Re-runs a model symbolically, flattening nested models and recording every call."""

    def __init__(self):
        self.calls: list[Call] = []

    def run(self, model, inputs, prefix: str = "", ancestors: tuple = ()):
        if _is_sequential(model):
            x = inputs
            for layer in model.layers:
                x = self.call(layer, prefix, ancestors, x)
            return x
        if _is_functional(model):
            return model._run_through_graph(
                inputs,
                operation_fn=lambda op: op,
                call_fn=lambda op, *args, **kwargs: self.call(op, prefix, ancestors, *args,
                                                              **kwargs),
            )
        raise LayerError(
            f"cannot look inside {type(model).__name__} {model.name!r}: camcli explains "
            "Functional and Sequential Keras models (subclassed models have no graph)"
        )

    def call(self, layer, prefix: str, ancestors: tuple, *args, **kwargs):
        path = prefix + layer.name
        if _is_sequential(layer) or _is_functional(layer):
            inputs = args[0] if len(args) == 1 else list(args)
            return self.run(layer, inputs, path + "/", (*ancestors, layer))
        output = layer(*args, **kwargs)
        import keras

        flat_inputs = [
            t for t in keras.tree.flatten((args, kwargs)) if isinstance(t, keras.KerasTensor)
        ]
        self.calls.append(Call(layer, path, flat_inputs, output, ancestors))
        return output


def keras_own(layer) -> bool:
    """Whether ``layer`` is one of Keras' own layers (whose insides are no targets)."""
    return type(layer).__module__.startswith("keras.")


def _sublayers(layer) -> list:
    flatten = getattr(layer, "_flatten_layers", None)
    return list(flatten(include_self=False, recursive=False)) if flatten else []


def _inner(call: Call) -> list[tuple[Any, str, tuple]]:
    """The layers a (subclassed, not Keras' own) layer tracks, all the way down, as
    ``(layer, path, ancestors)``; Keras' own layers are listed, not entered."""
    found = []

    def walk(layer, path, ancestors):
        if keras_own(layer) or _is_sequential(layer) or _is_functional(layer):
            return
        for sub in _sublayers(layer):
            sub_path = f"{path}/{sub.name}"
            found.append((sub, sub_path, (*ancestors, layer)))
            walk(sub, sub_path, (*ancestors, layer))

    walk(call.layer, call.path, call.ancestors)
    return found


#: Images in the probe pass; a layer whose tensor has another leading size (Swin's
#: windows) does not hold one row per image and is no target.
PROBE_BATCH = 2


def _probed(model, fresh, calls: list[Call]) -> list[Call]:
    """``calls`` with, after each subclassed layer, the layers it calls inside (found by
    one probe pass on zeros), in the order their calls began."""
    inner = {id(c): _inner(c) for c in calls}
    wanted = [(layer, path) for c in calls for layer, path, _ in inner[id(c)]]
    if not wanted:
        return calls
    import numpy as np

    height, width = (d or 224 for d in tuple(fresh.shape)[1:3])
    zeros = np.zeros((PROBE_BATCH, height, width, int(fresh.shape[-1] or 3)),
                     fresh.dtype if isinstance(fresh.dtype, str) else "float32")
    seen = {s.path: s for s in capture.probe(lambda: model(zeros, training=False), wanted)}
    result = []
    for call in calls:
        result.append(call)
        below = [(seen[path], layer, ancestors) for layer, path, ancestors in inner[id(call)]
                 if path in seen]
        for probe, layer, ancestors in sorted(below, key=lambda b: b[0].order):
            result.append(Call(layer, probe.path, [], None, ancestors, probe))
    return result


def replayed(model):
    """``(fresh input, calls, output)``: ``model`` replayed on a new input; the calls are
    the graph's layers, each followed by the layers it calls inside (`_probed`)."""
    import keras

    tensorflow()
    if not model.inputs:
        raise LayerError(f"model {model.name!r} is not built: it has no defined input")
    original_input = model.inputs[0]
    fresh = keras.Input(batch_shape=tuple(original_input.shape), dtype=original_input.dtype,
                        name="camcli_input")
    replay = _Replay()
    output = replay.run(model, fresh if len(model.inputs) == 1 else [fresh])
    return fresh, _probed(model, fresh, replay.calls), keras.tree.flatten(output)[0]
