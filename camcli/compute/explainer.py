"""The compute layer: a batch of images and the classes to explain in, an explanation out.

`Explainer` is camcli's counterpart of pytorch-grad-cam's ``BaseCAM(input_tensor,
targets)``: it holds the model split at its target layer(s) and a method, takes images
already resized to the model's input and a `camcli.compute.targets.Targets` value, and returns the
probabilities and every image's maps. It knows nothing of files, requests, records, class
tables, devices to choose or boxes; `build_explainer` makes one from an
`camcli.options.ExplainRequest`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from dataclasses import dataclass

import numpy as np

from camcli.compute.backend import tensorflow
from camcli.compute.methods import METHODS, BaseCAM, Predictor
from camcli.compute.models import LoadedModel, graph
from camcli.compute.models.addresses import block_attention
from camcli.compute.models.preprocess import preprocess
from camcli.compute.targets import Targets
from camcli.errors import UsageProblem
from camcli.options import (
    AUTO,
    TRANSFORMER_METHOD,
    TRANSFORMER_OPTIONS,
    ExplainRequest,
    as_flags,
    default,
)

log = logging.getLogger("camcli")


@dataclass
class ExplainedMap:
    """One map of one image.

    Attributes:
        class_index: the class it explains.
        heatmap: the [0, 1] map at feature-map resolution (None when only predicting).
        rank: with --top-k-maps, the class's rank (1 = most probable); else None.
    """

    class_index: int
    heatmap: np.ndarray | None
    rank: int | None = None


@dataclass
class BatchExplanation:
    """What `Explainer` returns for a batch.

    Attributes:
        probabilities: ``(n, classes)``.
        maps: per image, its maps in order: one, or one per rank then the asked class's.
    """

    probabilities: np.ndarray
    maps: list[list[ExplainedMap]]


class Explainer:
    """A model split at its target layer(s), with a method (or prediction only).

    Args:
        explained: the split model (`camcli.compute.models.graph.build`).
        method: a `camcli.compute.methods.BaseCAM` on ``explained``, or a `Predictor` (no maps).
        preprocess: the preprocessing mode of the model's inputs.
        input_size: ``(height, width)`` the images must be resized to.
        device: the TensorFlow device to run on (None: TensorFlow's placement).
    """

    def __init__(self, explained: graph.ExplainGraph, method: BaseCAM | Predictor,
                 preprocess: str, input_size: tuple[int, int], device: str | None = None):
        self.graph = explained
        self.method = method
        self.preprocess = preprocess
        self.input_size = input_size
        self.device = device
        self._scorer: Predictor | None = None

    @property
    def method_name(self) -> str | None:
        """The method's name; None when only predicting."""
        return self.method.name

    @property
    def layer(self) -> str | tuple[str, ...]:
        """The target layer's path; with several layers fused, their paths."""
        layers = self.graph.layers
        return layers[0] if len(layers) == 1 else tuple(layers)

    @property
    def fuse(self) -> str | None:
        """How several layers' maps are fused; None with one layer."""
        return self.method.fuse if len(self.graph.layers) > 1 else None

    @property
    def tokens(self) -> str | tuple[str | None, ...] | None:
        """How token layers made their maps, ``"P+HxW"`` (a record's ``tokens``): one
        value, or one per layer with several; None when no layer is a token layer."""
        said = [None if g is None else f"{g.prefix}+{g.height}x{g.width}"
                for g in (self.graph.grids or [None] * len(self.graph.layers))]
        if all(s is None for s in said):
            return None
        return said[0] if len(said) == 1 else tuple(said)

    @property
    def num_classes(self) -> int:
        return self.graph.num_classes

    def on_device(self):
        """Run on the device given (else where TensorFlow places it)."""
        if self.device is None:
            return contextlib.nullcontext()
        return tensorflow().device(self.device)

    def __call__(self, resized: np.ndarray, targets: Targets) -> BatchExplanation:
        """Explain a float32 RGB batch already resized to `input_size`, [0, 255]."""
        batch = preprocess(self.preprocess, resized)
        with self.on_device():
            first = self.method(batch, targets.first)
            maps = [[ExplainedMap(int(c), m, targets.first_rank)]
                    for c, m in zip(first.class_index, _maps_or_none(first), strict=True)]
            for later in targets.passes(first.probabilities):
                if self.method.class_specific:
                    computed = self.method(batch[later.rows], later.classes).maps
                else:  # the same map whatever the class (EigenCAM)
                    computed = first.maps[later.rows]
                for row, class_index, heatmap in zip(later.rows, later.classes, computed,
                                                     strict=True):
                    maps[row].append(ExplainedMap(int(class_index), heatmap, later.rank))
        return BatchExplanation(first.probabilities, maps)

    def predict(self, resized: np.ndarray, classes: np.ndarray) -> tuple[np.ndarray,
                                                                          np.ndarray]:
        """``(probabilities, explained class)`` of RGB [0, 255] model inputs, the class
        being ``classes``' (one per image) or the top-1 where it is `TOP1`."""
        if self._scorer is None:
            self._scorer = Predictor(self.graph)
        batch = preprocess(self.preprocess, resized)
        with self.on_device():
            explanation = self._scorer(batch, np.asarray(classes, np.int32))
        return explanation.probabilities, explanation.class_index

    def maps_of(self, resized: np.ndarray, classes: np.ndarray) -> tuple[list, np.ndarray]:
        """The method's map of ``classes`` (one per image, never `TOP1`) for each RGB
        [0, 255] model input, and the probabilities: ``(maps, probabilities)``."""
        batch = preprocess(self.preprocess, resized)
        with self.on_device():
            explanation = self.method(batch, np.asarray(classes, np.int32))
        return _maps_or_none(explanation), explanation.probabilities

    def probability_of(self, resized: np.ndarray, classes: np.ndarray) -> np.ndarray:
        """Probabilities of ``classes`` (one per image) for RGB [0, 255] model inputs."""
        probabilities, chosen = self.predict(resized, classes)
        return probabilities[np.arange(len(resized)), chosen]

    def first_maps(self, explained: BatchExplanation) -> tuple:
        """Each image's first map, its class and the class's probability: what the
        metrics (`camcli.analysis.metrics`) measure, with `probability_of`."""
        classes = np.array([first[0].class_index for first in explained.maps], np.int32)
        heatmaps = np.stack([first[0].heatmap for first in explained.maps])
        return heatmaps, classes, explained.probabilities[np.arange(len(classes)), classes]


def _maps_or_none(explanation) -> list:
    if explanation.maps is None:
        return [None] * len(explanation.class_index)
    return list(explanation.maps)


def build_explainer(loaded: LoadedModel, request: ExplainRequest = ExplainRequest(),
                    device: str | None = None, progress=None) -> Explainer:
    """Split ``loaded`` at the request's layers and build its method.

    ``progress``: the hook of methods that show their own progress (Score-CAM).

    Raises:
        LayerError, CamNotApplicable: the request does not fit the model.
        UsageProblem: a method's option given with another method.
    """
    request = chosen_method(request, loaded.model)
    check_method_options(request)
    kind = METHODS[request.method] if request.method else None
    layers, source = list(request.layers), "as asked"
    if not layers:
        layers, source = loaded.default_layer, f"the registered layer of {loaded.name}"
    own = kind.own_layers(loaded.model) if kind is not None else None
    if own is not None and not (request.layers and kind.takes_layers):
        if request.layers:
            raise UsageProblem(f"{kind.name} has no target layer: it uses "
                               f"{kind.own_layers_are} itself; drop {{layers}}", ("layers",))
        layers, source = own, f"{kind.name}: {kind.own_layers_are}"
    explained = graph.build(loaded.model, layers, source, request.token_grid,
                            request.prefix_tokens)
    if kind is None:
        method = Predictor(explained)
    else:
        options = {name: getattr(request, name) for name in kind.options}
        if kind.shows_progress:
            options["progress"] = progress
        method = kind(explained, request.fuse, request.smooth, **options)
    return Explainer(explained, method, loaded.preprocess, loaded.input_size, device)


def chosen_method(request: ExplainRequest, model) -> ExplainRequest:
    """``request`` with `AUTO` resolved for ``model``: `TRANSFORMER_METHOD` for a vision
    transformer whose every block attends with ``keras.layers.MultiHeadAttention`` when
    no layer is asked, with `TRANSFORMER_OPTIONS` where the request leaves them at their
    defaults; else ``gradcam`` (the layer asked, or the model's default layer); any other
    request as it is.

    Raises:
        LayerError: a model camcli cannot traverse.
    """
    if request.method != AUTO:
        return request
    if not request.layers:
        found = block_attention(model)
        if found is not None and all(address is not None for address in found.addresses):
            options = {name: value for name, value in TRANSFORMER_OPTIONS
                       if getattr(request, name) == default(ExplainRequest, name)}
            chosen = dataclasses.replace(request, method=TRANSFORMER_METHOD, **options)
            said = as_flags((name, getattr(chosen, name)) for name, _ in TRANSFORMER_OPTIONS)
            log.info("method: %s %s (the default for a vision transformer (%s), measured "
                     "by bench/transformers.py)", TRANSFORMER_METHOD, said, found.family)
            return chosen
    log.info("method: gradcam (the default)")
    return dataclasses.replace(request, method="gradcam")


def check_method_options(request: ExplainRequest) -> None:
    """Refuse a method's own options (`BaseCAM.options`) given with another method
    (with `AUTO`, those of `TRANSFORMER_METHOD` wait for the model to say).

    Raises:
        UsageProblem: naming the options and the methods they apply to.
    """
    method = TRANSFORMER_METHOD if request.method == AUTO else request.method
    chosen = METHODS[method].options if method else ()
    owners: dict[str, tuple[str, ...]] = {}
    for method in METHODS.values():
        for name in method.options:
            owners[name] = (*owners.get(name, ()), method.name)
    for name in owners:
        if name in chosen or getattr(request, name) == default(ExplainRequest, name):
            continue
        together = [other for other in owners if owners[other] == owners[name]]
        methods = owners[name]
        raise UsageProblem(
            f"{' and '.join('{' + n + '}' for n in together)} "
            f"appl{'ies' if len(together) == 1 else 'y'} to the {' and '.join(methods)} "
            f"method{'s' if len(methods) > 1 else ''} only", tuple(together))
