"""camcli in Python: open a model once, then explain photos into arrays and pictures.

    >>> import camcli
    >>> session = camcli.open(model="efficientnet-lite0", method="gradcam")
    >>> result = session.explain("sample_images/cat.jpg")
    >>> result.class_name, round(result.probability, 3)        # doctest: +SKIP
    ('tabby', 0.412)
    >>> result.map.shape                                        # the layer's grid
    (7, 7)
    >>> result.overlay().size == result.image.shape[1::-1]      # a PIL image of the photo's size
    True

`open` takes the command line's options under their parameter names (``--top-k-maps`` is
``top_k_maps``, ``--layer`` is ``layers``, ``--class`` is ``class_spec``), with the same
defaults: both build the same request objects (`camcli.options`) and open the same
`camcli.run.session.Session`; the photos go through the same pipeline
(`camcli.run.pipeline`), and `Result.overlay` draws as the commands draw
(`camcli.run.outputs.draw`). ``camcli predict`` runs on this module.

Errors are the library's exceptions (`camcli.errors`): `UsageProblem` for a request that
cannot be served (an unknown model, layer, class or option value), `ImageError` for a photo
that cannot be read, `ModelError` for a model that does not load.
"""

from __future__ import annotations

import dataclasses
import io
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from camcli.errors import ImageError, UsageProblem
from camcli.io.inputs import InputItem
from camcli.options import (
    AUTO,
    DEFAULT_BATCH_SIZE,
    DEFAULT_MODEL,
    BatchOptions,
    ExplainRequest,
    Given,
    ModelRequest,
    RenderStyle,
    default,
)
from camcli.run.pipeline import ImageResult, top_classes
from camcli.run.session import Session

#: What `Explaining.explain_many` does with a photo that cannot be read: raise its
#: `ImageError`, or yield its `Result` with ``error`` set and go on (as ``batch`` does).
ON_ERROR = ("raise", "keep")


#: `open`'s options: the fields of the requests the command line builds, by the same names.
OPTIONS = tuple(item.name for cls in (ModelRequest, ExplainRequest, RenderStyle)
                for item in dataclasses.fields(cls) if item.name not in ("model", "method"))


def open(model: Any = DEFAULT_MODEL, method: str | None = AUTO, **options) -> Explaining:
    """Load ``model`` and prepare ``method`` on it.

    Args:
        model: a built-in name (``camcli models``), a ``.keras`` / ``.h5`` path or URL,
            or a ``keras.Model`` already in memory (used as it is: not saved, not copied;
            its preprocessing is ``none`` unless ``preprocess`` says otherwise, as for a
            model file).
        method: a method name (``camcli methods``), ``"auto"`` (the measured default of
            the model's family), or None to predict only.
        **options: any option of ``camcli explain`` by its parameter name: the model's
            (``weights``, ``labels_file``, ``preprocess``, ``device``, ``precision``,
            ``unsafe_model_code``), the map's (``layers``, ``fuse``, ``class_spec``,
            ``top_k_maps``, ``smooth``, ``boxes``, ``box_threshold``...) and the drawing's
            (``alpha``, ``colormap``, ``quality``, ``panel``).

    Raises:
        TypeError: an option that camcli does not have.
        UsageProblem: a request that cannot be served (unknown model, layer, class...).
        ModelError: the model does not load.
    """
    from camcli.run.session import open_session

    if isinstance(options.get("layers"), str):
        options["layers"] = (options["layers"],)
    if isinstance(options.get("token_grid"), list):
        options["token_grid"] = tuple(options["token_grid"])
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise TypeError(f"camcli.open() has no option {', '.join(map(repr, unknown))}; its "
                        f"options: {', '.join(OPTIONS)}")
    named = isinstance(model, str | os.PathLike)
    given = Given({**options, "model": os.fspath(model) if named else DEFAULT_MODEL})
    request = given.build(ModelRequest)
    explain = given.build(ExplainRequest, method=method)
    style = given.build(RenderStyle)
    given.close()
    if named:
        return Explaining(open_session(request, explain), style)
    return Explaining(_in_memory_session(model, request, explain), style)


def _in_memory_session(model, request: ModelRequest, explain: ExplainRequest) -> Session:
    from camcli.compute.backend import select_device, tensorflow
    from camcli.compute.models import in_memory
    from camcli.run.session import check

    if request.precision != "fp32":
        raise UsageProblem("{precision} applies to a model camcli loads; a Keras model in "
                           "memory runs in its own precision", ("precision",))
    if request.weights != default(ModelRequest, "weights"):
        raise UsageProblem("{weights} applies to built-in models; a Keras model in memory "
                           "has its own", ("weights",))
    check(explain)
    device = select_device(request.device)
    with tensorflow().device(device):
        loaded = in_memory(model, request.preprocess, request.labels_file)
    return Session.create(loaded, explain, device)


@dataclass(frozen=True)
class Result:
    """One photo explained.

    Attributes:
        input: the photo's path, or ``<image N>`` for one given in memory.
        image: the photo, RGB uint8 at its own size (None when it could not be read).
        probabilities: the model's class probabilities (raw outputs for a model without
            a softmax).
        maps: one ``(class_index, map)`` per map: one by default, one per rank with
            ``top_k_maps`` (then the asked class's, with ``class_spec``).
        method: the method that made the maps (None when only predicting).
        error: why the photo could not be explained (None when it was).
    """

    input: str
    image: np.ndarray | None
    probabilities: np.ndarray | None
    maps: tuple[tuple[int, np.ndarray], ...]
    method: str | None
    error: str | None
    _labels: Any
    _style: RenderStyle

    @property
    def map(self) -> np.ndarray | None:
        """The first map: values in [0, 1] at the layer's grid, the array ``--save-maps``
        saves (float32)."""
        return self.maps[0][1] if self.maps else None

    @property
    def class_index(self) -> int | None:
        """The class the first map explains (the top-1 class, unless asked otherwise)."""
        return self.maps[0][0] if self.maps else None

    @property
    def class_name(self) -> str | None:
        """The name of `class_index`."""
        return None if self.class_index is None else self._labels.name(self.class_index)

    @property
    def probability(self) -> float | None:
        """The model's probability of `class_index`."""
        if self.class_index is None:
            return None
        return float(self.probabilities[self.class_index])

    def top(self, k: int = 5) -> list[list]:
        """The ``k`` most probable classes, best first: ``[index, name, probability]``
        each, as a record's ``top``."""
        return top_classes(self.probabilities, k, self._labels)

    def overlay(self, index: int = 0, *, alpha: float | None = None,
                colormap: str | None = None, panel: bool | None = None,
                box: list[int] | None = None):
        """Map ``index`` drawn over the photo as the commands draw it, as a PIL image
        (RGB, the photo's size; a panel is three times as wide). ``alpha``, ``colormap``
        and ``panel`` default to the session's; ``box`` (``[x0, y0, x1, y1]``) is drawn on
        it.

        Raises:
            ValueError: the photo has no map (it failed, or the session only predicts).
        """
        from PIL import Image

        from camcli.run.outputs import draw

        if not self.maps:
            raise ValueError(f"{self.input}: no map to draw ({self.error or 'predict only'})")
        given = {"alpha": alpha, "colormap": colormap, "panel": panel}
        style = RenderStyle(**{**self._style.__dict__,
                               **{k: v for k, v in given.items() if v is not None}})
        class_index, heatmap = self.maps[index]
        bgr = draw(self.image, self.probabilities, class_index, heatmap, style,
                   self.method or "", self._labels, box)
        return Image.fromarray(np.ascontiguousarray(bgr[:, :, ::-1]))

    def _repr_png_(self) -> bytes | None:
        """The overlay, for Jupyter."""
        if not self.maps:
            return None
        buffer = io.BytesIO()
        self.overlay().save(buffer, format="PNG")
        return buffer.getvalue()

    def __repr__(self) -> str:
        if self.error:
            return f"Result({self.input!r}, error={self.error!r})"
        if self.class_index is None:
            return f"Result({self.input!r}, top={self.top(1)})"
        return (f"Result({self.input!r}, {self.class_name!r} (class {self.class_index}) "
                f"{self.probability:.1%}, {self.method})")


class Explaining:
    """A model loaded and a method prepared on it (`open` makes one).

    Attributes:
        session: the command line's `camcli.run.session.Session` underneath.
        style: how `Result.overlay` draws.
    """

    def __init__(self, session: Session, style: RenderStyle = RenderStyle()):
        self.session = session
        self.style = style

    @property
    def method(self) -> str | None:
        """The method the maps are made with (``auto`` resolved)."""
        return self.session.explainer.method_name if self.session.request.method else None

    @property
    def labels(self):
        """The model's class names (`camcli.io.labels.Labels`)."""
        return self.session.labels

    def explain(self, image) -> Result:
        """Explain one photo: a path or URL, a PIL image or an RGB uint8 array ``(height,
        width, 3)`` (or grey ``(height, width)``).

        Raises:
            ImageError: the photo cannot be read (the message names it and says why).
        """
        return next(iter(self.explain_many([image])))

    def explain_many(self, images: Iterable, batch_size: int = DEFAULT_BATCH_SIZE,
                     workers: int = default(BatchOptions, "workers"),
                     on_error: str = "raise") -> Iterator[Result]:
        """Explain photos lazily, in order, ``batch_size`` per forward pass, the next
        batch read from disk (in ``workers`` threads) while the model runs.

        ``images``: paths, URLs, PIL images or arrays, mixed as you like (a generator is
        read as it goes). ``on_error``: ``"raise"`` stops at the first photo that cannot
        be read with its `ImageError`; ``"keep"`` yields its `Result` with ``error`` set
        and goes on, as ``camcli batch`` does.
        """
        if on_error not in ON_ERROR:
            raise UsageProblem(f"on_error must be one of {', '.join(ON_ERROR)}, not "
                               f"{on_error!r}")
        items = (_item(image, number) for number, image in enumerate(images))
        for found in self.session.stream(items, batch_size, workers):
            result = self._result(found)
            if result.error and on_error == "raise":
                raise ImageError(result.input, result.error)
            yield result

    def _result(self, found: ImageResult) -> Result:
        return Result(found.input.path, found.image, found.probabilities,
                      tuple((explained.class_index, explained.heatmap.astype(np.float32))
                            for explained in found.maps if explained.heatmap is not None),
                      self.method, found.error, self.session.labels, self.style)

    def __repr__(self) -> str:
        loaded = self.session.loaded
        return f"Explaining(model={loaded.name!r}, method={self.method!r})"


def _item(image, number: int) -> InputItem:
    """An input of `Explaining.explain_many`: a path as the commands take it, or an image
    in memory as RGB uint8 (an `InputItem`, as the commands find them, is taken as it is)."""
    if isinstance(image, InputItem):
        return image
    if isinstance(image, str | os.PathLike):
        path = os.fspath(image)
        return InputItem(path, os.path.basename(path))
    name = f"<image {number}>"
    return InputItem(name, name, pixels=_rgb(image, name))


def _rgb(image, name: str) -> np.ndarray:
    from PIL import Image

    from camcli.io.images import to_rgb

    if isinstance(image, Image.Image):
        return to_rgb(image)
    if not isinstance(image, np.ndarray):
        raise UsageProblem(f"{name}: give a path, a PIL image or a NumPy array, not "
                           f"{type(image).__name__}")
    if image.dtype != np.uint8:
        raise UsageProblem(f"{name}: an array image must be uint8 (0-255), got {image.dtype}")
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] != 3 or 0 in image.shape:
        raise UsageProblem(f"{name}: an array image must be (height, width, 3) RGB or "
                           f"(height, width) grey, got shape {image.shape}")
    return np.ascontiguousarray(image)
