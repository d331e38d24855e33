"""One Keras model that returns both the target layers' feature maps and the logits.

`build` replays the model (`camcli.compute.models.replay`), finds the target layers by
their addresses (`camcli.compute.models.addresses`), and makes one model ``x ->
[features..., logits]``. It peels the classifier's softmax (or sigmoid) off, so a method
can use the pre-softmax logit, and records the chain of layers from the (one) target layer
to the output (`ExplainGraph.head_layers`), for methods with a rule about the head (CAM).
Layers inside a subclassed layer are captured by call interception during the one
forward pass (`ExplainGraph.run`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from camcli.compute.models import capture
from camcli.compute.models import tokens as token_layers
from camcli.compute.models.addresses import (
    after_blocks,
    automatic,
    block_of,
    find_layer,
    grid_of,
    readout_of,
)
from camcli.compute.models.replay import Call, outputs, replayed
from camcli.errors import LayerError

log = logging.getLogger("camcli")

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
        head_layers: with one target layer's output, the Keras layers after it, in order,
            as long as each tensor feeds exactly one layer: the whole head up to the
            output, or up to where it branches (`head_problem`); empty otherwise.
        head_problem: why ``head_layers`` do not reach the model's output on their own
            (several layers fused, a layer's input, a layer inside another, an output that
            branches or is unused); None when they do.
        grids: per target layer, how its tokens become a map (`tokens.TokenGrid`), or
            None for a layer that is a map already.
        captured: per target layer, ``(layer, side)`` when it is read by call
            interception during the forward pass (`run`), None when ``model`` returns it.
        sites: per target layer, ``(layer, side)``: the Keras layer and which tensor of
            its call the target is (`run_replacing`).
        head: with one target layer whose output alone feeds the rest of the model, the
            Keras model from that output to the logits (`logits_from`); else None.
        readout: with attention targets (``...:attention``), where the classifier reads
            the class from the tokens: ``token`` (the first token, a class token) or
            ``mean`` (the patches' mean); else None.
        blocks: with attention targets, per target, ``(block, "output")``: the
            transformer block it attends in, whose output tokens `run_blocks` captures.
        token_head: with attention targets, the model's head on a block's output tokens
            (`TokenHead`: what follows the last block, up to the logits), or None when
            camcli cannot split it off (`token_head_problem` says why).
    """

    model: Any
    layers: list[str]
    output_kind: str
    num_classes: int
    head_layers: list = field(default_factory=list)
    head_problem: str | None = None
    grids: list = None
    captured: list = None
    sites: list = None
    head: Any = None
    readout: str | None = None
    blocks: list = None
    token_head: TokenHead | None = None
    token_head_problem: str | None = None

    def logits_from(self, x, features):
        """The logits when the (one) target layer gives ``features`` instead of its own
        tensor: through `head` alone when there is one, else a whole forward pass of
        ``x`` (one image per row of ``features``) with the layer's tensor replaced."""
        if self.head is not None:
            return outputs(self.head(features, training=False))[-1]
        layer, side = self.sites[0]
        with capture.replacing(layer, side, features):
            return outputs(self.model(x, training=False))[-1]

    def run(self, x):
        """The one forward pass: ``(features, logits)``, one feature tensor per target
        layer, in the order asked.

        Raises:
            LayerError: an intercepted layer was not called in the pass.
        """
        features, _, logits = self._pass(x)
        return features, logits

    def run_blocks(self, x):
        """The forward pass of `run`, also capturing `blocks`' output tokens:
        ``(features, block tokens, logits)``."""
        return self._pass(x, self.blocks)

    def _pass(self, x, also: list = ()):
        """One forward pass: the targets' features, the tensors of the sites ``also``
        (``(layer, side)``) and the logits."""
        captured = self.captured or [None] * len(self.layers)
        sites = [c for c in captured if c is not None]
        with capture.Captured([*sites, *also]).during() as seen:
            *graph_features, logits = outputs(self.model(x, training=False))
        from_graph, from_calls = iter(graph_features), iter(seen.tensors[:len(sites)])
        features = []
        for layer, site in zip(self.layers, captured, strict=True):
            tensor = next(from_graph) if site is None else next(from_calls)
            if tensor is None:
                raise LayerError(f"layer {layer!r} was not called in the forward pass: "
                                 "nothing to explain there")
            features.append(tensor)
        return features, seen.tensors[len(sites):], logits

    def as_map(self, index: int, tensor):
        """Target layer ``index``'s output (or its gradient) as an ``(n, h, w, c)`` map."""
        grid = self.grids[index] if self.grids else None
        return tensor if grid is None else token_layers.to_grid(tensor, grid)

    @property
    def layer(self) -> str:
        """The target layer's path (several: joined with ' + ')."""
        return " + ".join(self.layers)


class TokenHead:
    """A transformer's head on a block's output tokens: the layers its encoder calls
    after the last block (a final LayerNormalization), then the graph from the encoder's
    output to the logits (pooling, classifier, pre-softmax), so that ``head(tokens of
    the last block)`` are the model's own logits (`check`)."""

    def __init__(self, tail: list, rest, last_block):
        self.tail, self.rest, self.last_block = tail, rest, last_block

    def __call__(self, tokens):
        for layer in self.tail:
            tokens = layer(tokens, training=False)
        return outputs(self.rest(tokens, training=False))[-1]

    def check(self, model) -> str | None:
        """Why the head is not ``model``'s (its logits differ on random images), or None
        when it is: one eager pass of two images."""
        import numpy as np

        probe = np.random.default_rng(0).uniform(
            0, 1, (2, *(d or 32 for d in model.inputs[0].shape[1:]))).astype("float32")
        with capture.Captured([(self.last_block, "output")]).during() as seen:
            logits = np.asarray(outputs(model(probe, training=False))[-1], np.float64)
        mine = np.asarray(self(seen.tensors[0]), np.float64)
        if mine.shape != logits.shape or not np.allclose(
                mine, logits, rtol=1e-3, atol=1e-3 * max(1.0, float(np.abs(logits).max()))):
            return ("applying the layers after the last block to a block's tokens does not "
                    "give the model's logits")
        return None


def _token_head(calls: list[Call], logits) -> tuple[TokenHead | None, str | None]:
    """The model's head on a block's tokens (`TokenHead`), or None and why not."""
    import keras

    found = after_blocks(calls)
    if isinstance(found, str):
        return None, found
    tail, encoder, last = found
    encoder_output = keras.tree.flatten(encoder.output)[0]
    try:  # the classifier may read more than the encoder's tokens
        rest = keras.Model(encoder_output, logits, name="camcli_token_head")
    except ValueError:
        return None, "the classifier reads more than the encoder's output tokens"
    return TokenHead([c.layer for c in tail], rest, last.layer), None


def _activation_name(layer) -> str:
    import keras

    if isinstance(layer, keras.layers.Softmax):
        return "softmax"
    activation = getattr(layer, "activation", None)
    return getattr(activation, "__name__", "") if activation is not None else ""


def _peel_output(calls: list[Call], output):
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


def _consumers(calls: list[Call], tensor) -> list[Call]:
    return [c for c in calls if any(t is tensor for t in c.inputs)]


def _head_chain(calls: list[Call], features, output) -> tuple[list, str | None]:
    """The layers from ``features`` to ``output`` while each tensor feeds exactly one layer,
    and why they stop short of ``output`` (None when they reach it)."""
    layers, tensor = [], features
    while not (tensor is output and layers):
        consumers = _consumers(calls, tensor)
        if len(consumers) != 1:
            where = "is not used" if not consumers else "feeds several layers"
            return layers, f"the target layer's output {where} before the classifier"
        layers.append(consumers[0].layer)
        tensor = consumers[0].output
    return layers, None


def build(model, layer: str | Sequence[str] | None = None, source: str = "as asked",
          token_grid: tuple[int, int] | None = None, prefix_tokens: int | None = None
          ) -> ExplainGraph:
    """Split ``model`` open at ``layer`` (a name or nested path, or several; None: found
    automatically).

    ``source`` says where ``layer`` came from, for the log line. An address may go
    through the layers a subclassed layer tracks, and end in ``:input``. A 3-D target is
    a token layer (`camcli.compute.models.tokens`): its grid comes from the model's config, else
    from the token count; ``token_grid`` (height, width) and ``prefix_tokens`` settle it
    otherwise.

    The automatic choice is `automatic`'s: a transformer's last block's first
    LayerNormalization (its input normalised per token), else the
    last layer whose output is a 4-D map with height and width above 1, searched through
    nested backbones too.

    Raises:
        LayerError: no such layer, an unsuitable one, or a model camcli cannot traverse.
    """
    import keras

    fresh, calls, output = replayed(model)
    names = [layer] if isinstance(layer, str) else list(layer or [])
    if names:
        chosen_all = [find_layer(calls, name) for name in names]
        addresses = [c.address for c in chosen_all]
        if len(set(addresses)) < len(addresses):
            raise LayerError(f"a target layer is given twice: {', '.join(addresses)}")
        log.info("target layer%s: %s (%s)", "s" if len(addresses) > 1 else "",
                 ", ".join(addresses), source)
    else:
        found = automatic(calls)
        if found is None:
            raise LayerError(
                "no layer with a spatial 4-D output (height and width > 1) and no repeated "
                "transformer blocks in the model: give {layer} ('camcli layers MODEL' lists "
                "the layers it takes)", ("layer",)
            )
        chosen, why = found
        chosen_all = [chosen]
        log.info("target layer: %s (%s, found automatically)", chosen.address, why)

    logits, kind = _peel_output(calls, output)
    only = chosen_all[0]
    if len(chosen_all) > 1:
        head_layers, problem = [], "several layers are fused"
    elif only.call.intercepted or only.side == "input":
        head_layers, problem = [], (f"{only.address!r} is " +
                                    ("a layer's input" if only.side == "input" else
                                     "inside another layer") +
                                    ", not a layer's output in the model's graph")
    else:
        head_layers, problem = _head_chain(calls, only.tensor, output)
    grids = [grid_of(c, fresh, token_grid, prefix_tokens) for c in chosen_all]
    for target, grid in zip(chosen_all, grids, strict=True):
        if grid is not None:
            log.info("layer %s: %d prefix tokens, then a %dx%d grid of patches",
                     target.address, grid.prefix, grid.height, grid.width)
    readout, blocks, token_head, token_head_problem = None, None, None, None
    if any(c.side == "attention" for c in chosen_all):
        blocks = [block_of(calls, c.call) for c in chosen_all]
        if any(b is None for b in blocks):
            raise LayerError("an attention target outside the transformer's blocks: the "
                             "attention methods explain the blocks' attention")
        blocks = [(b.layer, "output") for b in blocks]
        token_head, token_head_problem = _token_head(calls, logits)
        prefix = grids[0].prefix if grids and grids[0] is not None else 0
        readout = readout_of(chosen_all[0].call, model) or ("token" if prefix else "mean")
        log.info("attention: read out from %s", "the class token (the first token)"
                 if readout == "token" else "the mean of the patches")
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
        head_layers=head_layers,
        head_problem=problem,
        grids=grids,
        captured=[(c.call.layer, c.side) if c.call.intercepted else None
                  for c in chosen_all],
        sites=[(c.call.layer, c.side) for c in chosen_all],
        head=head,
        readout=readout,
        blocks=blocks,
        token_head=token_head,
        token_head_problem=token_head_problem,
    )
