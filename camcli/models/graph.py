"""One Keras model that returns both the target layer's feature maps and the logits.

Keras 3 cannot build ``Model(model.inputs, [inner_layer.output, model.output])`` when the
layer sits inside a nested backbone (``Sequential([ResNet50(include_top=False), ...])``):
the inner layer's output belongs to the backbone's own graph. So camcli *replays* the
model on a fresh input, layer by layer, descending into every nested Sequential or
Functional model (the same graph walk ``keras.models.clone_model`` does, but keeping the
original layers and weights). Every leaf layer's output is then a tensor of one flat
graph, from which any layer can be taken as the target.

The replay also peels the classifier's softmax (or sigmoid) off, so Grad-CAM can use the
pre-softmax logit, and checks whether the head after the target layer is
global-average-pooling -> Dense, which CAM requires.
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from camcli.backend import tensorflow
from camcli.errors import LayerError
from camcli.models import tokens as token_layers

log = logging.getLogger("camcli")

#: Layers that change nothing at inference time (CAM's head may contain them).
_INFERENCE_IDENTITY = (
    "Dropout",
    "SpatialDropout1D",
    "SpatialDropout2D",
    "SpatialDropout3D",
    "GaussianDropout",
    "GaussianNoise",
    "AlphaDropout",
    "ActivityRegularization",
    "Identity",
)

@dataclass
class _Call:
    layer: Any
    path: str
    inputs: list
    output: Any


@dataclass
class ExplainGraph:
    """A model's forward pass split open at the target layer(s).

    Attributes:
        model: Keras model ``x -> [features..., logits]``: one ``(n, h, w, c)`` feature
            map per target layer, in the order asked, then the logits.
        layers: paths of the target layers, '/'-separated through nested models.
        output_kind: how probabilities follow from ``logits``: ``softmax``, ``sigmoid`` or
            ``raw`` (the model's output is used as it is, for probability and score).
        num_classes: width of the model's output.
        cam_kernel: the Dense kernel ``(c, num_classes)`` when the head after the (one)
            target layer is global-average-pooling -> Dense, else None.
        cam_problem: why CAM does not apply (None when it does).
        grids: per target layer, how its tokens become a map (`tokens.TokenGrid`), or
            None for a layer that is a map already.
    """

    model: Any
    layers: list[str]
    output_kind: str
    num_classes: int
    cam_kernel: Any = None
    cam_problem: str | None = None
    grids: list = None

    def as_map(self, index: int, tensor):
        """Target layer ``index``'s output (or its gradient) as an ``(n, h, w, c)`` map."""
        grid = self.grids[index] if self.grids else None
        return tensor if grid is None else token_layers.to_grid(tensor, grid)

    @property
    def layer(self) -> str:
        """The target layer's path (several: joined with ' + ')."""
        return " + ".join(self.layers)


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
        self.calls: list[_Call] = []

    def run(self, model, inputs, prefix: str = ""):
        if _is_sequential(model):
            x = inputs
            for layer in model.layers:
                x = self.call(layer, prefix, x)
            return x
        if _is_functional(model):
            return model._run_through_graph(
                inputs,
                operation_fn=lambda op: op,
                call_fn=lambda op, *args, **kwargs: self.call(op, prefix, *args, **kwargs),
            )
        raise LayerError(
            f"cannot look inside {type(model).__name__} {model.name!r}: camcli explains "
            "Functional and Sequential Keras models (subclassed models have no graph)"
        )

    def call(self, layer, prefix: str, *args, **kwargs):
        path = prefix + layer.name
        if _is_sequential(layer) or _is_functional(layer):
            inputs = args[0] if len(args) == 1 else list(args)
            return self.run(layer, inputs, path + "/")
        output = layer(*args, **kwargs)
        import keras

        flat_inputs = [
            t for t in keras.tree.flatten((args, kwargs)) if isinstance(t, keras.KerasTensor)
        ]
        self.calls.append(_Call(layer, path, flat_inputs, output))
        return output


def _accepted(call: _Call) -> bool:
    """Whether ``--layer`` takes this layer: a 4-D map, or 3-D tokens."""
    shape = getattr(call.output, "shape", None)
    return shape is not None and len(shape) in (3, 4)


def _automatic(calls: list[_Call]) -> _Call | None:
    """The layer explained when none is asked for: the last 4-D map wider than 1x1."""
    spatial = [c for c in calls if _spatial(c)]
    return spatial[-1] if spatial else None


def _spatial(call: _Call) -> bool:
    shape = getattr(call.output, "shape", None)
    if shape is None or len(shape) != 4:
        return False
    return all(d is None or d > 1 for d in shape[1:3])


def _find_layer(calls: list[_Call], name: str) -> _Call:
    exact = [c for c in calls if c.path == name]
    if not exact:
        exact = [c for c in calls if c.layer.name == name]
    paths = {c.path for c in exact}
    if len(paths) > 1:
        raise LayerError(
            f"layer name {name!r} is ambiguous: {', '.join(sorted(paths))}; give the full path"
        )
    if not exact:
        names = [c.path for c in calls] + [c.layer.name for c in calls]
        close = difflib.get_close_matches(name, names, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise LayerError(f"no layer named {name!r} in the model{hint}")
    chosen = exact[-1]
    if not _accepted(chosen):
        shape = tuple(chosen.output.shape) if hasattr(chosen.output, "shape") else None
        raise LayerError(
            f"layer {chosen.path!r} has output shape {shape}: a class activation map needs a "
            "4-D (batch, height, width, channels) feature map or 3-D (batch, tokens, "
            "channels) tokens"
        )
    return chosen


def _activation_name(layer) -> str:
    import keras

    if isinstance(layer, keras.layers.Softmax):
        return "softmax"
    activation = getattr(layer, "activation", None)
    return getattr(activation, "__name__", "") if activation is not None else ""


def _peel_output(calls: list[_Call], output):
    """Return (logits, kind): the pre-activation tensor and how to map it to probabilities."""
    import keras

    producer = next((c for c in reversed(calls) if c.output is output), None)
    if producer is None:
        return output, "raw"
    layer = producer.layer
    kind = _activation_name(layer)
    if kind not in ("softmax", "sigmoid"):
        return output, "raw"
    if isinstance(layer, (keras.layers.Activation, keras.layers.Softmax)):
        return producer.inputs[0], kind
    if isinstance(layer, keras.layers.Dense) and not getattr(layer, "quantization_mode", None):
        features = producer.inputs[0]
        logits = keras.ops.matmul(features, keras.ops.cast(layer.kernel, features.dtype))
        if layer.use_bias:
            logits = logits + keras.ops.cast(layer.bias, features.dtype)
        return logits, kind
    return output, "raw"


def _consumers(calls: list[_Call], tensor) -> list[_Call]:
    return [c for c in calls if any(t is tensor for t in c.inputs)]


def _cam_head(calls: list[_Call], features, output) -> tuple[Any, str | None]:
    """Check that features -> GAP -> Dense -> (activation) -> output; return the kernel."""
    import keras

    tensor, pooled, dense = features, False, None
    while tensor is not output or dense is None:
        consumers = _consumers(calls, tensor)
        if len(consumers) != 1:
            where = "is not used" if not consumers else "feeds several layers"
            return None, f"the target layer's output {where} before the classifier"
        call = consumers[0]
        layer, kind = call.layer, type(call.layer).__name__
        if kind in _INFERENCE_IDENTITY:
            pass
        elif not pooled:
            if not isinstance(layer, keras.layers.GlobalAveragePooling2D):
                feeds = f"the target layer feeds {layer.name} ({kind})"
                return None, f"{feeds}, not global average pooling"
            pooled = True
        elif dense is None:
            if isinstance(layer, (keras.layers.Flatten, keras.layers.Reshape)):
                pass  # GlobalAveragePooling2D(keepdims=True) followed by a flatten
            elif isinstance(layer, keras.layers.Dense):
                dense = layer
            else:
                return None, f"{layer.name} ({kind}) stands between the pooling and the classifier"
        elif not (isinstance(layer, (keras.layers.Activation, keras.layers.Softmax))):
            return None, f"{layer.name} ({kind}) follows the classifier's Dense layer"
        tensor = call.output
        if tensor is output and dense is None:
            return None, "the model's output is not a Dense layer after the pooling"
    return dense.kernel, None


def _replayed(model):
    """``(fresh input, replay, output)``: ``model`` replayed on a new input."""
    import keras

    tensorflow()
    if not model.inputs:
        raise LayerError(f"model {model.name!r} is not built: it has no defined input")
    original_input = model.inputs[0]
    fresh = keras.Input(batch_shape=tuple(original_input.shape), dtype=original_input.dtype,
                        name="camcli_input")
    replay = _Replay()
    output = replay.run(model, fresh if len(model.inputs) == 1 else [fresh])
    return fresh, replay, keras.tree.flatten(output)[0]


@dataclass(frozen=True)
class LayerInfo:
    """One address ``--layer`` accepts.

    Attributes:
        address: the layer's path, '/'-separated through nested models.
        shape: its output shape (None: any batch size).
        default: whether it is the layer explained when none is asked for.
        grid: for a token layer, how its tokens make a map (None when that needs
            ``token_grid`` / ``prefix_tokens``, or for a map).
    """

    address: str
    shape: tuple
    default: bool
    grid: token_layers.TokenGrid | None = None


def _input_size(fresh) -> tuple[int, int]:
    height, width = tuple(fresh.shape)[1:3] if len(fresh.shape) == 4 else (None, None)
    return height or 0, width or 0


def _grid(call: _Call, fresh, token_grid=None, prefix_tokens=None):
    """The token grid of a 3-D target layer; None for a 4-D one."""
    shape = tuple(call.output.shape)
    if len(shape) != 3:
        return None
    if shape[1] is None:
        raise LayerError(f"layer {call.path!r} has a variable number of tokens: camcli needs "
                         "a model with a fixed input size")
    return token_layers.infer(shape[1], _input_size(fresh), call.path, token_grid,
                              prefix_tokens)


def layers(model, registered: str | None = None) -> list[LayerInfo]:
    """Every layer of ``model`` that ``--layer`` accepts (a 4-D output), in graph order,
    and which is explained by default: ``registered`` (the model's own), else the last
    one with height and width above 1.

    Raises:
        LayerError: a model camcli cannot traverse, or ``registered`` names no layer.
    """
    fresh, replay, _ = _replayed(model)
    last = {}
    for call in replay.calls:  # a layer called twice answers to its last call
        if _accepted(call):
            last.pop(call.path, None)
            last[call.path] = call
    chosen = _find_layer(replay.calls, registered) if registered else \
        _automatic(replay.calls)
    default = chosen.path if chosen is not None else None
    found = []
    for path, call in last.items():
        try:
            grid = _grid(call, fresh)
        except LayerError:
            grid = None  # the options must settle it
        found.append(LayerInfo(path, tuple(call.output.shape), path == default, grid))
    return found


def build(model, layer: str | Sequence[str] | None = None, source: str = "as asked",
          token_grid: tuple[int, int] | None = None, prefix_tokens: int | None = None
          ) -> ExplainGraph:
    """Split ``model`` open at ``layer`` (a name or nested path, or several; None: found
    automatically).

    ``source`` says where ``layer`` came from, for the log line. A 3-D target layer is a
    token layer (`camcli.models.tokens`): ``token_grid`` (height, width) and
    ``prefix_tokens`` say how its tokens make a map when the token count does not.

    The automatic choice is the last layer whose output is a 4-D map with height and width
    above 1, searched through nested backbones too.

    Raises:
        LayerError: no such layer, an unsuitable one, or a model camcli cannot traverse.
    """
    import keras

    fresh, replay, output = _replayed(model)
    names = [layer] if isinstance(layer, str) else list(layer or [])
    if names:
        chosen_all = [_find_layer(replay.calls, name) for name in names]
        paths = [c.path for c in chosen_all]
        if len(set(paths)) < len(paths):
            raise LayerError(f"a target layer is given twice: {', '.join(paths)}")
        chosen = chosen_all[-1]
        log.info("target layer%s: %s (%s)", "s" if len(paths) > 1 else "", ", ".join(paths),
                 source)
    else:
        chosen = _automatic(replay.calls)
        if chosen is None:
            raise LayerError(
                "no layer with a spatial 4-D output (height and width > 1) in the model: "
                "nothing to build a class activation map from"
            )
        chosen_all = [chosen]
        log.info("target layer: %s (last spatial feature map, found automatically)", chosen.path)

    logits, kind = _peel_output(replay.calls, output)
    if len(chosen_all) == 1:
        kernel, problem = _cam_head(replay.calls, chosen.output, output)
    else:
        kernel, problem = None, "several layers are fused"
    grids = [_grid(c, fresh, token_grid, prefix_tokens) for c in chosen_all]
    for call, grid in zip(chosen_all, grids, strict=True):
        if grid is not None:
            log.info("layer %s: %d prefix tokens, then a %dx%d grid of patches", call.path,
                     grid.prefix, grid.height, grid.width)
    explain_model = keras.Model(fresh, [*(c.output for c in chosen_all), logits],
                                name=f"{model.name}_explain")
    return ExplainGraph(
        model=explain_model,
        layers=[c.path for c in chosen_all],
        output_kind=kind,
        num_classes=int(output.shape[-1]),
        cam_kernel=kernel,
        cam_problem=problem,
        grids=grids,
    )
