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

Layers a subclassed layer tracks and calls in Python (keras-hub's transformer blocks) are
no graph nodes: a probe pass (`camcli.models.capture.probe`) finds them and their shapes,
and the explaining pass captures their tensors by call interception (`ExplainGraph.run`).
An address ending in ``:input`` explains what a layer receives instead of what it returns.
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from camcli.backend import tensorflow
from camcli.errors import LayerError
from camcli.models import capture
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

#: The suffix of an address that explains a layer's input instead of its output.
INPUT_SUFFIX = ":input"


@dataclass
class _Call:
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


@dataclass(frozen=True)
class _Target:
    call: _Call
    side: str = "output"

    @property
    def address(self) -> str:
        return self.call.path + (INPUT_SUFFIX if self.side == "input" else "")

    @property
    def shape(self) -> tuple | None:
        return self.call.shape(self.side)

    @property
    def tensor(self):
        """The graph tensor (None for an intercepted layer)."""
        if self.call.intercepted:
            return None
        return self.call.output if self.side == "output" else self.call.inputs[0]


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
        captured: per target layer, ``(layer, side)`` when it is read by call
            interception during the forward pass (`run`), None when ``model`` returns it.
        sites: per target layer, ``(layer, side)``: the Keras layer and which tensor of
            its call the target is (`run_replacing`).
        head: with one target layer whose output alone feeds the rest of the model, the
            Keras model from that output to the logits (`logits_from`); else None.
    """

    model: Any
    layers: list[str]
    output_kind: str
    num_classes: int
    cam_kernel: Any = None
    cam_problem: str | None = None
    grids: list = None
    captured: list = None
    sites: list = None
    head: Any = None

    def logits_from(self, x, features):
        """The logits when the (one) target layer gives ``features`` instead of its own
        tensor: through `head` alone when there is one, else a whole forward pass of
        ``x`` (one image per row of ``features``) with the layer's tensor replaced."""
        if self.head is not None:
            return _outputs(self.head(features, training=False))[-1]
        layer, side = self.sites[0]
        with capture.replacing(layer, side, features):
            return _outputs(self.model(x, training=False))[-1]

    def run(self, x):
        """The one forward pass: ``(features, logits)``, one feature tensor per target
        layer, in the order asked.

        Raises:
            LayerError: an intercepted layer was not called in the pass.
        """
        captured = self.captured or [None] * len(self.layers)
        sites = [c for c in captured if c is not None]
        with capture.Captured(sites).during() as seen:
            *graph_features, logits = _outputs(self.model(x, training=False))
        from_graph, from_calls = iter(graph_features), iter(seen.tensors)
        features = []
        for layer, site in zip(self.layers, captured, strict=True):
            tensor = next(from_graph) if site is None else next(from_calls)
            if tensor is None:
                raise LayerError(f"layer {layer!r} was not called in the forward pass: "
                                 "nothing to explain there")
            features.append(tensor)
        return features, logits

    def as_map(self, index: int, tensor):
        """Target layer ``index``'s output (or its gradient) as an ``(n, h, w, c)`` map."""
        grid = self.grids[index] if self.grids else None
        return tensor if grid is None else token_layers.to_grid(tensor, grid)

    @property
    def layer(self) -> str:
        """The target layer's path (several: joined with ' + ')."""
        return " + ".join(self.layers)


def _outputs(result) -> list:
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
        self.calls: list[_Call] = []

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
        self.calls.append(_Call(layer, path, flat_inputs, output, ancestors))
        return output


def _keras_own(layer) -> bool:
    """Whether ``layer`` is one of Keras' own layers (whose insides are no targets)."""
    return type(layer).__module__.startswith("keras.")


def _sublayers(layer) -> list:
    flatten = getattr(layer, "_flatten_layers", None)
    return list(flatten(include_self=False, recursive=False)) if flatten else []


def _inner(call: _Call) -> list[tuple[Any, str, tuple]]:
    """The layers a (subclassed, not Keras' own) layer tracks, all the way down, as
    ``(layer, path, ancestors)``; Keras' own layers are listed, not entered."""
    found = []

    def walk(layer, path, ancestors):
        if _keras_own(layer) or _is_sequential(layer) or _is_functional(layer):
            return
        for sub in _sublayers(layer):
            sub_path = f"{path}/{sub.name}"
            found.append((sub, sub_path, (*ancestors, layer)))
            walk(sub, sub_path, (*ancestors, layer))

    walk(call.layer, call.path, call.ancestors)
    return found


#: Images in the probe pass; a layer whose tensor has another leading size (Swin's
#: windows) does not hold one row per image and is no target.
_PROBE_BATCH = 2


def _probed(model, fresh, calls: list[_Call]) -> list[_Call]:
    """``calls`` with, after each subclassed layer, the layers it calls inside (found by
    one probe pass on zeros), in the order their calls began."""
    inner = {id(c): _inner(c) for c in calls}
    wanted = [(layer, path) for c in calls for layer, path, _ in inner[id(c)]]
    if not wanted:
        return calls
    import numpy as np

    height, width = (d or 224 for d in tuple(fresh.shape)[1:3])
    zeros = np.zeros((_PROBE_BATCH, height, width, int(fresh.shape[-1] or 3)),
                     fresh.dtype if isinstance(fresh.dtype, str) else "float32")
    seen = {s.path: s for s in capture.probe(lambda: model(zeros, training=False), wanted)}
    result = []
    for call in calls:
        result.append(call)
        below = [(seen[path], layer, ancestors) for layer, path, ancestors in inner[id(call)]
                 if path in seen]
        for probe, layer, ancestors in sorted(below, key=lambda b: b[0].order):
            result.append(_Call(layer, probe.path, [], None, ancestors, probe))
    return result


def _per_image(call: _Call, side: str) -> bool:
    """An intercepted layer's tensor holds one row per image."""
    if call.seen is None:
        return True
    shape = call.seen.shape(side)
    return shape is not None and shape[0] == _PROBE_BATCH


def _accepted(call: _Call, side: str = "output") -> bool:
    """Whether ``--layer`` takes this layer: a 4-D map, or 3-D tokens."""
    shape = call.shape(side)
    return shape is not None and len(shape) in (3, 4) and _per_image(call, side)


def _blocks(calls: list[_Call]) -> list[_Call]:
    """A transformer's blocks: the outermost layers of a class of its own (not Keras')
    that return tokens and is called more than once."""
    tokens = [c for c in calls if not _keras_own(c.layer) and _accepted(c)
              and len(c.shape()) == 3]
    counts: dict[type, int] = {}
    for c in tokens:
        counts[type(c.layer)] = counts.get(type(c.layer), 0) + 1
    repeated = [c for c in tokens if counts[type(c.layer)] > 1]
    return [c for c in repeated
            if not any(c.path.startswith(other.path + "/") for other in repeated)]


def _first_norm(calls: list[_Call], block: _Call) -> _Call | None:
    """The LayerNormalization that the last pre-norm block inside ``block`` (itself, or a
    Swin stage's last block) applies first: ViT's ``ln_1``, DINOv2's and Swin's
    ``norm1``. A pre-norm block is the layer holding two or more of them."""
    import keras

    norms: dict[str, list[_Call]] = {}
    for call in calls:
        if (call.path.startswith(block.path + "/") and _accepted(call)
                and isinstance(call.layer, keras.layers.LayerNormalization)):
            norms.setdefault(call.path.rsplit("/", 1)[0], []).append(call)
    blocks = [found for found in norms.values() if len(found) > 1]
    return blocks[-1][0] if blocks else None


def _automatic(calls: list[_Call]) -> tuple[_Target, str] | None:
    """The layer explained when none is asked for, and why: a transformer's last block's
    first LayerNormalization (else that block's input), where `bench/transformers.py`
    measured LayerCAM to point best; else the last 4-D graph map wider than 1x1."""
    blocks = _blocks(calls)
    if blocks:
        norm = _first_norm(calls, blocks[-1])
        if norm is not None:
            return _Target(norm), "a transformer's last block's first LayerNormalization"
        return _Target(blocks[-1], "input"), "a transformer's last block's input"
    spatial = [c for c in calls if not c.intercepted and _spatial(c)]
    return (_Target(spatial[-1]), "last spatial feature map") if spatial else None


def _spatial(call: _Call) -> bool:
    shape = call.shape()
    if shape is None or len(shape) != 4:
        return False
    return all(d is None or d > 1 for d in shape[1:3])


def _find_layer(calls: list[_Call], address: str) -> _Target:
    name, side = address, "output"
    if address.endswith(INPUT_SUFFIX):
        name, side = address[: -len(INPUT_SUFFIX)], "input"
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
        raise LayerError(f"no layer named {name!r} in the model{hint} ('camcli layers "
                         "MODEL' lists them)")
    chosen = _Target(exact[-1], side)
    if not _accepted(chosen.call, side):
        what = "input" if side == "input" else "output shape"
        if not _per_image(chosen.call, side):
            raise LayerError(f"layer {chosen.address!r}'s {what} {chosen.shape} does not hold "
                             "one row per image (windows, heads): choose the layer around it")
        raise LayerError(
            f"layer {chosen.address!r} has {what} {chosen.shape}: a class activation map "
            "needs a 4-D (batch, height, width, channels) feature map or 3-D (batch, tokens, "
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


@dataclass(frozen=True)
class LayerInfo:
    """One address ``--layer`` accepts.

    Attributes:
        address: the layer's path, '/'-separated through nested models (and
            tracked sublayers), with ``:input`` for a block's input.
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


def _config_grid(target: _Target) -> tuple[int, int] | None:
    """The patch grid the innermost model above the layer states in its config
    (keras-hub's backbones: ``image_shape`` / ``patch_size``), or None."""
    for owner in reversed(target.call.ancestors):
        try:
            config = owner.get_config()
        except Exception:  # a layer without a serialisable config says nothing
            continue
        image, patch = config.get("image_shape"), config.get("patch_size")
        if not image or not patch:
            continue
        patch = (patch, patch) if isinstance(patch, int) else tuple(patch)
        if image[0] and image[1] and patch[0] and patch[1]:
            return int(image[0]) // int(patch[0]), int(image[1]) // int(patch[1])
    return None


def _grid(target: _Target, fresh, token_grid=None, prefix_tokens=None):
    """The token grid of a 3-D target; None for a 4-D one."""
    shape = target.shape
    if len(shape) != 3:
        return None
    if shape[1] is None:
        raise LayerError(f"layer {target.address!r} has a variable number of tokens: camcli "
                         "needs a model with a fixed input size")
    if token_grid is None and prefix_tokens is None:
        said = _config_grid(target)
        found = token_layers.from_config(shape[1], said) if said else None
        if found is not None:
            return found
    return token_layers.infer(shape[1], _input_size(fresh), target.address, token_grid,
                              prefix_tokens)


def bias_layers(model) -> list[str]:
    """The addresses of ``model``'s convolutions with a bias and its batch
    normalisations, with a 4-D output, in the order of the forward pass (FullGrad's
    layers).

    Raises:
        LayerError: a model camcli cannot traverse.
    """
    import keras

    _, calls, _ = _replayed(model)
    kinds = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.SeparableConv2D,
             keras.layers.BatchNormalization)
    found: dict[str, None] = {}
    for call in calls:
        layer = call.layer
        if call.intercepted or not isinstance(layer, kinds) or not _accepted(call):
            continue
        if len(call.shape()) == 4 and (isinstance(layer, keras.layers.BatchNormalization)
                                       or getattr(layer, "use_bias", False)):
            found[call.path] = None
    return list(found)


def layers(model, registered: str | None = None) -> list[LayerInfo]:
    """Every address of ``model`` that ``--layer`` accepts (a 4-D map or 3-D tokens), in
    the order of the forward pass, a block's input before the block, and which is
    explained by default: ``registered`` (the model's own), else `_automatic`'s.

    Raises:
        LayerError: a model camcli cannot traverse, or ``registered`` names no layer.
    """
    fresh, calls, _ = _replayed(model)
    if registered:
        chosen = _find_layer(calls, registered)
    else:
        chosen = (_automatic(calls) or (None, None))[0]
    default = chosen.address if chosen is not None else None
    blocks = {id(c) for c in _blocks(calls)}
    last: dict[str, _Target] = {}
    for call in calls:  # a layer called twice answers to its last call
        sides = ("input", "output") if id(call) in blocks else ("output",)
        for side in sides:
            if _accepted(call, side):
                target = _Target(call, side)
                last.pop(target.address, None)
                last[target.address] = target
    if chosen is not None and default not in last:
        last[default] = chosen
    found = []
    for address, target in last.items():
        try:
            grid = _grid(target, fresh)
        except LayerError:
            grid = None  # the options must settle it
        found.append(LayerInfo(address, target.shape, address == default, grid))
    return found


def build(model, layer: str | Sequence[str] | None = None, source: str = "as asked",
          token_grid: tuple[int, int] | None = None, prefix_tokens: int | None = None
          ) -> ExplainGraph:
    """Split ``model`` open at ``layer`` (a name or nested path, or several; None: found
    automatically).

    ``source`` says where ``layer`` came from, for the log line. An address may go
    through the layers a subclassed layer tracks, and end in ``:input``. A 3-D target is
    a token layer (`camcli.models.tokens`): its grid comes from the model's config, else
    from the token count; ``token_grid`` (height, width) and ``prefix_tokens`` settle it
    otherwise.

    The automatic choice is `_automatic`'s: a transformer's last block's first
    LayerNormalization (its input normalised per token), else the
    last layer whose output is a 4-D map with height and width above 1, searched through
    nested backbones too.

    Raises:
        LayerError: no such layer, an unsuitable one, or a model camcli cannot traverse.
    """
    import keras

    fresh, calls, output = _replayed(model)
    names = [layer] if isinstance(layer, str) else list(layer or [])
    if names:
        chosen_all = [_find_layer(calls, name) for name in names]
        addresses = [c.address for c in chosen_all]
        if len(set(addresses)) < len(addresses):
            raise LayerError(f"a target layer is given twice: {', '.join(addresses)}")
        log.info("target layer%s: %s (%s)", "s" if len(addresses) > 1 else "",
                 ", ".join(addresses), source)
    else:
        automatic = _automatic(calls)
        if automatic is None:
            raise LayerError(
                "no layer with a spatial 4-D output (height and width > 1) and no repeated "
                "transformer blocks in the model: give {layer} ('camcli layers MODEL' lists "
                "the layers it takes)", ("layer",)
            )
        chosen, why = automatic
        chosen_all = [chosen]
        log.info("target layer: %s (%s, found automatically)", chosen.address, why)

    logits, kind = _peel_output(calls, output)
    only = chosen_all[0]
    if len(chosen_all) > 1:
        kernel, problem = None, "several layers are fused"
    elif only.call.intercepted or only.side == "input":
        kernel, problem = None, (f"CAM reads the classifier after a layer's output, and "
                                 f"{only.address!r} is " +
                                 ("a layer's input" if only.side == "input" else
                                  "inside another layer"))
    else:
        kernel, problem = _cam_head(calls, only.tensor, output)
    grids = [_grid(c, fresh, token_grid, prefix_tokens) for c in chosen_all]
    for target, grid in zip(chosen_all, grids, strict=True):
        if grid is not None:
            log.info("layer %s: %d prefix tokens, then a %dx%d grid of patches",
                     target.address, grid.prefix, grid.height, grid.width)
    in_graph = [c.tensor for c in chosen_all if not c.call.intercepted]
    explain_model = keras.Model(fresh, [*in_graph, logits], name=f"{model.name}_explain")
    head = None
    if len(chosen_all) == 1 and not only.call.intercepted and only.side == "output":
        try:  # a residual branch that bypasses the layer leaves the head unconnected
            head = keras.Model(only.tensor, logits, name=f"{model.name}_head")
        except ValueError:
            head = None
    return ExplainGraph(
        model=explain_model,
        layers=[c.address for c in chosen_all],
        output_kind=kind,
        num_classes=int(output.shape[-1]),
        cam_kernel=kernel,
        cam_problem=problem,
        grids=grids,
        captured=[(c.call.layer, c.side) if c.call.intercepted else None
                  for c in chosen_all],
        sites=[(c.call.layer, c.side) for c in chosen_all],
        head=head,
    )
