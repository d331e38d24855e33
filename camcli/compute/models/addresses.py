"""Addresses: the layers ``--layer`` takes, and the one explained when none is asked for.

An address is a layer's path, '/'-separated through nested models and through the layers
a subclassed layer tracks (``vit_encoder/transformer_block_3``), ending in ``:input`` to
explain what a layer receives instead of what it returns. A target is a 4-D map, or 3-D
tokens (a vision transformer's), whose grid of patches comes from the model's config or
the token count (`camcli.compute.models.tokens`). A ``keras.layers.MultiHeadAttention``'s
address ending in ``:attention`` is its attention probabilities, ``(batch, heads, tokens,
tokens)`` (the attention methods' targets, `attention_targets`).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from camcli.compute.models import tokens as token_layers
from camcli.compute.models.replay import PROBE_BATCH, Call, keras_own, replayed
from camcli.errors import LayerError

#: The suffix of an address that explains a layer's input instead of its output.
INPUT_SUFFIX = ":input"
#: The suffix of a MultiHeadAttention's address that names its attention probabilities.
ATTENTION_SUFFIX = ":attention"
#: Where a classifier reads its class from the tokens: the class token, or their mean.
READOUTS = ("token", "mean")


@dataclass(frozen=True)
class Target:
    call: Call
    side: str = "output"

    @property
    def address(self) -> str:
        return self.call.path + {"input": INPUT_SUFFIX, "attention": ATTENTION_SUFFIX}.get(
            self.side, "")

    @property
    def shape(self) -> tuple | None:
        if self.side == "attention":  # (batch, heads, tokens, tokens)
            tokens = self.call.shape("output")
            return None if tokens is None else (None, self.call.layer.num_heads, tokens[1],
                                                tokens[1])
        return self.call.shape(self.side)

    @property
    def tensor(self):
        """The graph tensor (None for an intercepted layer)."""
        if self.call.intercepted:
            return None
        return self.call.output if self.side == "output" else self.call.inputs[0]


def per_image(call: Call, side: str) -> bool:
    """An intercepted layer's tensor holds one row per image."""
    if call.seen is None:
        return True
    shape = call.seen.shape(side)
    return shape is not None and shape[0] == PROBE_BATCH


def accepted(call: Call, side: str = "output") -> bool:
    """Whether ``--layer`` takes this layer: a 4-D map, or 3-D tokens (or, ``attention``,
    the attention probabilities of a MultiHeadAttention over 3-D tokens)."""
    if side == "attention":
        return _attends(call) and accepted(call, "output") and len(call.shape()) == 3
    shape = call.shape(side)
    return shape is not None and len(shape) in (3, 4) and per_image(call, side)


def _attends(call: Call) -> bool:
    import keras

    return isinstance(call.layer, keras.layers.MultiHeadAttention)


def _blocks(calls: list[Call]) -> list[Call]:
    """A transformer's blocks: the outermost layers of a class of its own (not Keras')
    that return tokens and is called more than once."""
    tokens = [c for c in calls if not keras_own(c.layer) and accepted(c)
              and len(c.shape()) == 3]
    counts: dict[type, int] = {}
    for c in tokens:
        counts[type(c.layer)] = counts.get(type(c.layer), 0) + 1
    repeated = [c for c in tokens if counts[type(c.layer)] > 1]
    return [c for c in repeated
            if not any(c.path.startswith(other.path + "/") for other in repeated)]


def _first_norm(calls: list[Call], block: Call) -> Call | None:
    """The LayerNormalization that the last pre-norm block inside ``block`` (itself, or a
    Swin stage's last block) applies first: ViT's ``ln_1``, DINOv2's and Swin's
    ``norm1``. A pre-norm block is the layer holding two or more of them."""
    import keras

    norms: dict[str, list[Call]] = {}
    for call in calls:
        if (call.path.startswith(block.path + "/") and accepted(call)
                and isinstance(call.layer, keras.layers.LayerNormalization)):
            norms.setdefault(call.path.rsplit("/", 1)[0], []).append(call)
    blocks = [found for found in norms.values() if len(found) > 1]
    return blocks[-1][0] if blocks else None


def automatic(calls: list[Call]) -> tuple[Target, str] | None:
    """The layer explained when none is asked for, and why: a transformer's last block's
    first LayerNormalization (else that block's input), where `bench/transformers.py`
    measured LayerCAM to point best; else the last 4-D graph map wider than 1x1."""
    blocks = _blocks(calls)
    if blocks:
        norm = _first_norm(calls, blocks[-1])
        if norm is not None:
            return Target(norm), "a transformer's last block's first LayerNormalization"
        return Target(blocks[-1], "input"), "a transformer's last block's input"
    spatial = [c for c in calls if not c.intercepted and _spatial(c)]
    return (Target(spatial[-1]), "last spatial feature map") if spatial else None


def _spatial(call: Call) -> bool:
    shape = call.shape()
    if shape is None or len(shape) != 4:
        return False
    return all(d is None or d > 1 for d in shape[1:3])


def find_layer(calls: list[Call], address: str) -> Target:
    name, side = address, "output"
    if address.endswith(INPUT_SUFFIX):
        name, side = address[: -len(INPUT_SUFFIX)], "input"
    elif address.endswith(ATTENTION_SUFFIX):
        name, side = address[: -len(ATTENTION_SUFFIX)], "attention"
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
    chosen = Target(exact[-1], side)
    if side == "attention" and not accepted(chosen.call, side):
        raise LayerError(f"layer {name!r} is a {type(chosen.call.layer).__name__}: "
                         f"'{ATTENTION_SUFFIX}' names the attention probabilities of a "
                         "keras.layers.MultiHeadAttention over tokens")
    if not accepted(chosen.call, side):
        what = "input" if side == "input" else "output shape"
        if not per_image(chosen.call, side):
            raise LayerError(f"layer {chosen.address!r}'s {what} {chosen.shape} does not hold "
                             "one row per image (windows, heads): choose the layer around it")
        raise LayerError(
            f"layer {chosen.address!r} has {what} {chosen.shape}: a class activation map "
            "needs a 4-D (batch, height, width, channels) feature map or 3-D (batch, tokens, "
            "channels) tokens"
        )
    return chosen


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


def _config_grid(target: Target) -> tuple[int, int] | None:
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


def grid_of(target: Target, fresh, token_grid=None, prefix_tokens=None):
    """The token grid of a 3-D target (of an attention target, its tokens'); None for a
    4-D one."""
    if target.side == "attention":
        target = Target(target.call, "output")
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


def layers(model, registered: str | None = None) -> list[LayerInfo]:
    """Every address of ``model`` that ``--layer`` accepts (a 4-D map or 3-D tokens), in
    the order of the forward pass, a block's input before the block, and which is
    explained by default: ``registered`` (the model's own), else `automatic`'s.

    Raises:
        LayerError: a model camcli cannot traverse, or ``registered`` names no layer.
    """
    fresh, calls, _ = replayed(model)
    if registered:
        chosen = find_layer(calls, registered)
    else:
        chosen = (automatic(calls) or (None, None))[0]
    default = chosen.address if chosen is not None else None
    blocks = {id(c) for c in _blocks(calls)}
    last: dict[str, Target] = {}
    for call in calls:  # a layer called twice answers to its last call
        sides = ("input", "output") if id(call) in blocks else ("output",)
        for side in sides:
            if accepted(call, side):
                target = Target(call, side)
                last.pop(target.address, None)
                last[target.address] = target
    if chosen is not None and default not in last:
        last[default] = chosen
    found = []
    for address, target in last.items():
        try:
            grid = grid_of(target, fresh)
        except LayerError:
            grid = None  # the options must settle it
        found.append(LayerInfo(address, target.shape, address == default, grid))
    return found


def graph_layers(model) -> list[tuple[str, object, tuple]]:
    """Every layer of ``model``'s graph (nested models flattened, no tracked sublayers),
    in the order of the forward pass: ``(address, layer, output shape)``; a layer called
    twice answers to its first call.

    Raises:
        LayerError: a model camcli cannot traverse.
    """
    _, calls, _ = replayed(model)
    found: dict[str, tuple] = {}
    for call in calls:
        if not call.intercepted and call.path not in found:
            found[call.path] = (call.path, call.layer, call.shape())
    return list(found.values())


@dataclass(frozen=True)
class BlockAttention:
    """A transformer's blocks and what they attend with (`block_attention`).

    Attributes:
        addresses: per block, in the order of the forward pass, its MultiHeadAttention's
            attention address (``.../transformer_block_1/mha:attention``), or None when
            the block attends otherwise.
        attention: per block, the class of the layer it attends with (the first layer
            under it whose name says attention), or None when none was found.
        family: the model family, as the class of the backbone holding the blocks
            (``ViTBackbone``, ``SwinTransformerBackbone``), else of the blocks.
    """

    addresses: list
    attention: list
    family: str


def block_attention(model) -> BlockAttention | None:
    """What each transformer block of ``model`` attends with; None when the model has no
    transformer blocks (a CNN).

    Raises:
        LayerError: a model camcli cannot traverse.
    """
    _, calls, _ = replayed(model)
    blocks = _blocks(calls)
    if not blocks:
        return None
    addresses, kinds = [], []
    for block in blocks:
        inside = [c for c in calls if c.path.startswith(block.path + "/")]
        mha = next((c for c in inside if accepted(c, "attention")), None)
        addresses.append(None if mha is None else Target(mha, "attention").address)
        named = next((c for c in inside if "attention" in type(c.layer).__name__.lower()),
                     None)
        kinds.append(type(named.layer).__name__ if named is not None else None)
    owners = [type(o).__name__ for o in blocks[0].ancestors]
    family = next((name for name in reversed(owners) if name.endswith("Backbone")),
                  type(blocks[0].layer).__name__)
    return BlockAttention(addresses, kinds, family)


def block_of(calls: list[Call], inner: Call) -> Call | None:
    """The transformer block (`_blocks`) that ``inner`` is called in, or None."""
    return next((b for b in _blocks(calls) if inner.path.startswith(b.path + "/")), None)


def after_blocks(calls: list[Call]) -> tuple[list[Call], Call, Call] | str:
    """What a transformer does to its last block's tokens before the graph takes them
    over: ``(tail, encoder, last block)``, the layers the encoder (the graph layer that
    calls the blocks) calls after its last block, in order (ViT's and DeiT's final
    ``layer_norm``; none in DINOv2, whose norm is a graph layer), the encoder's call and
    the last block's; or why there is no such split (a string)."""
    blocks = _blocks(calls)
    if not blocks:
        return "the model has no transformer blocks"
    last = blocks[-1]
    parent = last.path.rsplit("/", 1)[0]
    encoder = next((c for c in calls if c.path == parent and not c.intercepted), None)
    if encoder is None or any(b.path.rsplit("/", 1)[0] != parent for b in blocks):
        return ("its blocks are not called by one layer of the model's graph, so camcli "
                "cannot apply the model's head to a block's tokens")
    tail = [c for c in calls if c.intercepted and c.path.rsplit("/", 1)[0] == parent
            and c.seen.order > last.seen.order]
    return tail, encoder, last


def readout_of(call: Call, model) -> str | None:
    """``token`` or ``mean`` when a model above ``call`` (``model`` itself included)
    states its pooling (keras-hub's classifiers: ``pooling="token"`` or ``"gap"``), else
    None."""
    for owner in reversed((model, *call.ancestors)):
        try:
            pooling = owner.get_config().get("pooling")
        except Exception:  # a layer without a serialisable config says nothing
            continue
        if pooling in ("token", "cls", "first"):
            return "token"
        if pooling in ("gap", "avg", "mean", "average"):
            return "mean"
    return None
