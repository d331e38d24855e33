"""Token layers: a vision transformer's ``(batch, tokens, channels)`` output as a map.

A transformer cuts the image into an ``h x w`` grid of patches, row by row, and puts
``prefix`` tokens in front (a class token, a distillation token, register tokens). To
explain such a layer, the prefix tokens are dropped and the patch tokens reshaped,
row-major, into ``(h, w, channels)``: token ``prefix + k`` is cell ``(k // w, k % w)``. The
gradients go through the same transform, so every method runs unchanged on the result.

The grid and the prefix follow from the number of tokens and the input size when exactly
one patch size fits (197 tokens of a 224x224 input: 1 prefix and 14x14 patches of 16);
``token_grid`` and ``prefix_tokens`` settle the other cases, and an ambiguous case is an
error that says so, never a guess.
"""

from __future__ import annotations

from dataclasses import dataclass

from camcli.compute.backend import tensorflow
from camcli.errors import LayerError

#: The most prefix tokens looked for (a class token, a distillation token, registers).
MAX_PREFIX = 8


@dataclass(frozen=True)
class TokenGrid:
    """How a token layer's output becomes a map: drop ``prefix`` tokens, reshape the rest
    to ``height x width``."""

    prefix: int
    height: int
    width: int


def infer(tokens: int, input_size: tuple[int, int], layer: str,
          grid: tuple[int, int] | None = None, prefix: int | None = None) -> TokenGrid:
    """The grid of a layer of ``tokens`` tokens on an ``input_size`` (height, width) image.

    ``grid`` and ``prefix`` are given or found: the prefix (0..`MAX_PREFIX`) and the
    square patch size that divides the input into exactly the remaining tokens.

    Raises:
        LayerError: they do not fit the tokens, or several readings do (naming the
            options that settle it).
    """
    if grid is not None:
        rest = tokens - grid[0] * grid[1]
        if prefix is not None and prefix != rest:
            raise LayerError(f"layer {layer!r} has {tokens} tokens, which a {grid[0]}x"
                             f"{grid[1]} grid and {prefix} prefix tokens do not make")
        if prefix is None and not 0 <= rest <= MAX_PREFIX:
            raise LayerError(f"layer {layer!r} has {tokens} tokens: a {grid[0]}x{grid[1]} "
                             f"grid leaves {rest} before the patches; give {{prefix_tokens}} "
                             "too if that is right", ("prefix_tokens",))
        return TokenGrid(rest, *grid)
    height, width = input_size
    readings = []
    for count in range(MAX_PREFIX + 1) if prefix is None else [prefix]:
        patches = tokens - count
        for size in range(1, min(height, width) + 1):
            if height % size == 0 and width % size == 0 and \
                    (height // size) * (width // size) == patches:
                readings.append(TokenGrid(count, height // size, width // size))
    if len(readings) == 1:
        return readings[0]
    options = "{token_grid}" if prefix is not None else "{token_grid} and {prefix_tokens}"
    if not readings:
        raise LayerError(f"layer {layer!r} has {tokens} tokens, which no square patches of "
                         f"the {height}x{width} input make" +
                         ("" if prefix is None else f" after {prefix} prefix tokens") +
                         f"; give {options}", ("token_grid", "prefix_tokens"))
    shown = ", ".join(f"{r.height}x{r.width} after {r.prefix}" for r in readings[:4])
    raise LayerError(f"layer {layer!r} has {tokens} tokens, which read as several grids "
                     f"({shown}); give {options}", ("token_grid", "prefix_tokens"))


def from_config(tokens: int, patch_grid: tuple[int, int]) -> TokenGrid | None:
    """The grid a model's config states (``image_shape`` / ``patch_size``): its patch grid,
    the tokens beyond it being the prefix (ViT's class token, DeiT's distillation token,
    DINOv2's registers); or, for a hierarchical model without prefix tokens (Swin), that
    grid halved per stage. None when neither makes ``tokens``.
    """
    height, width = patch_grid
    rest = tokens - height * width
    if 0 <= rest <= MAX_PREFIX:
        return TokenGrid(rest, height, width)
    while height % 2 == 0 and width % 2 == 0 and height * width > tokens:
        height, width = height // 2, width // 2  # a patch-merging stage
        if height * width == tokens:
            return TokenGrid(0, height, width)
    return None


def to_grid(tensor, grid: TokenGrid):
    """``(n, tokens, c)`` -> ``(n, height, width, c)``, prefix dropped, row-major."""
    tf = tensorflow()
    patches = tensor[:, grid.prefix:, :]
    return tf.reshape(patches, [-1, grid.height, grid.width, tensor.shape[-1]])
