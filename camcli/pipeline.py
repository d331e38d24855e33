"""The shared pipeline: images in, one forward pass per batch, per-image results out.

    discover -> decode (worker threads) -> resize + preprocess -> batch
             -> forward pass giving feature maps and predictions -> maps -> results

Every command uses it: ``predict`` reads the probabilities, ``cam`` / ``gradcam`` write one
overlay per image, ``batch`` adds output mirroring, a manifest and resume (`camcli.batch`).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from camcli.backend import tensorflow
from camcli.classes import FOLDER, ClassAssigner
from camcli.errors import ImageError, UsageProblem
from camcli.images import load_rgb, resize_for_model
from camcli.manifest import Request
from camcli.methods import METHODS, TOP1, Predictor, rank_classes
from camcli.models import LoadedModel, graph
from camcli.models.preprocess import preprocess
from camcli.options import DEFAULT_BATCH_SIZE, BatchOptions, ExplainRequest, ModelRequest, default

log = logging.getLogger("camcli")


class HasPath(Protocol):
    """What the pipeline needs of an input (an `camcli.inputs.InputItem`, or a batch job
    that carries one): its path, and optionally ``requested_class`` (the class asked for
    it) and ``problem`` (why it cannot be done: its error, without decoding)."""

    path: str


class Explainer:
    """A loaded model, split at its target layer, with a method (or prediction only).

    Args:
        loaded: from `camcli.models.load`.
        request: what to explain (`camcli.options.ExplainRequest`; ``method=None``
            predicts only).
        device: TensorFlow device name to run on (None: TensorFlow's choice).
        progress: Score-CAM's progress hook (``progress(total)`` returns a tqdm-like bar).

    Raises:
        LayerError, CamNotApplicable, ClassError: the request does not fit the model.
        UsageProblem: conflicting parameters.
    """

    def __init__(self, loaded: LoadedModel, request: ExplainRequest = ExplainRequest(),
                 device: str | None = None, progress=None):
        _check(request)
        self.loaded = loaded
        self.request = request
        self.device = device
        self.method_name = request.method
        self.metrics_steps = request.metric_steps
        source = "as asked" if request.layers else f"the registered layer of {loaded.name}"
        self.graph = graph.build(loaded.model, list(request.layers) or loaded.default_layer,
                                 source)
        if request.method == "scorecam":
            self.method = METHODS["scorecam"](self.graph, batch_size=request.scorecam_batch,
                                              max_maps=request.max_maps, progress=progress)
        elif request.method:
            self.method = METHODS[request.method](self.graph, fuse=request.fuse)
        else:
            self.method = Predictor(self.graph)
        self.top_k_maps = (None if request.top_k_maps is None
                           else min(request.top_k_maps, self.graph.num_classes))
        self._scorer = Predictor(self.graph) if request.metric_steps else None
        self.class_index = (
            TOP1 if request.class_spec is None
            else loaded.labels.resolve(request.class_spec, self.graph.num_classes)
        )
        self._classes = None

    @property
    def layer(self) -> str | tuple[str, ...]:
        """The target layer's path; with several layers fused, their paths."""
        layers = self.graph.layers
        return layers[0] if len(layers) == 1 else tuple(layers)

    @property
    def box_threshold(self) -> float | None:
        """The threshold of the maps' boxes, or None when no box is asked for."""
        return self.request.box_threshold if self.request.boxes else None

    @property
    def classes(self) -> ClassAssigner | None:
        """With ``class_from``: what gives each input its class (read on first use, so
        a Ray actor, which only explains, never opens the table)."""
        if self.request.class_from and self._classes is None:
            self._classes = ClassAssigner(self.request.class_from, self.loaded.labels,
                                          self.graph.num_classes,
                                          self.request.skip_unknown_classes)
        return self._classes

    def answers(self, item=None) -> Request:
        """The request the manifest records of ``item`` answer (an `InputItem`; its
        ``requested_class`` when the classes come per image)."""
        asked, source = None, None
        if self.request.class_from:
            asked = getattr(item, "requested_class", None)
            source = FOLDER if self.request.class_from == FOLDER else "file"
        elif self.class_index != TOP1:
            asked, source = self.class_index, "option"
        if source is None:
            target = "top1" if self.top_k_maps is None else "top-k"
        else:
            target = "class" if self.top_k_maps is None else "top-k+class"
        fuse = self.request.fuse if len(self.graph.layers) > 1 else None
        return Request(self.loaded.name, self.layer, self.method_name, target, asked, source,
                       fuse)

    def __call__(self, resized: np.ndarray, requested: np.ndarray | None = None
                 ) -> tuple[np.ndarray, list[list[ExplainedMap]]]:
        """Explain a float32 RGB batch already resized to the model's input size.

        ``requested`` gives, per image, the class asked for it (-1: none; default: the
        explainer's own, --class or the top class). Returns the ``(n, classes)``
        probabilities and, per image, its maps: one; or with ``top_k_maps`` one per rank
        (each from its own pass of the method, rank 1 first), then the asked class's.
        """
        asked = np.full(len(resized), self.class_index, np.int32)
        if requested is not None:
            requested = np.asarray(requested, np.int32)
            asked = np.where(requested >= 0, requested, asked)
        batch = preprocess(self.loaded.preprocess, resized)
        with self.on_device():
            if not self.top_k_maps:
                explanation = self.method(batch, asked)
                maps = [[ExplainedMap(int(c), m)]
                        for c, m in zip(explanation.class_index, _maps_or_none(explanation),
                                        strict=True)]
            else:
                explanation = self.method(batch, TOP1)
                maps = self._ranked(batch, explanation)
                self._add_asked(batch, asked, explanation, maps)
        return explanation.probabilities, maps

    def _add_asked(self, batch: np.ndarray, asked: np.ndarray, explanation, maps) -> None:
        """With ranks: the asked class's map follows them (rank None)."""
        rows = np.flatnonzero(asked >= 0)
        if not len(rows):
            return
        extra = self._maps_of(batch[rows], asked[rows], explanation.maps[rows])
        for number, row in enumerate(rows):
            maps[row].append(ExplainedMap(int(asked[row]), extra[number]))

    def on_device(self):
        """Run on the chosen device (``open_explainer``), else where TensorFlow places it."""
        if self.device is None:
            return contextlib.nullcontext()
        return tensorflow().device(self.device)

    def probability_of(self, resized: np.ndarray, classes: np.ndarray) -> np.ndarray:
        """Probabilities of ``classes`` (one per image) for RGB [0, 255] model inputs."""
        batch = preprocess(self.loaded.preprocess, resized)
        with self.on_device():
            explanation = self._scorer(batch, np.asarray(classes, np.int32))
        return explanation.probabilities[np.arange(len(batch)), explanation.class_index]

    def faithfulness(self, resized: np.ndarray, probabilities: np.ndarray,
                     maps: list[list[ExplainedMap]]):
        """The metrics of each image's first map: a `camcli.metrics.Faithfulness`."""
        from camcli.metrics import faithfulness

        classes = np.array([first[0].class_index for first in maps], np.int32)
        heatmaps = np.stack([first[0].heatmap for first in maps])
        original = probabilities[np.arange(len(resized)), classes]
        return faithfulness(self.probability_of, resized, heatmaps, classes, original,
                            self.metrics_steps, batch_size=max(len(resized), 32))

    def _ranked(self, batch: np.ndarray, explanation) -> list[list[ExplainedMap]]:
        ranked = rank_classes(explanation.probabilities, self.top_k_maps).astype(np.int32)
        # Rank 1 is the map already computed: the method chose the top class by the same rule.
        per_rank = [explanation.maps]
        for rank in range(1, ranked.shape[1]):
            per_rank.append(self._maps_of(batch, ranked[:, rank], explanation.maps))
        return [[ExplainedMap(int(ranked[row, rank]), per_rank[rank][row], rank + 1)
                 for rank in range(ranked.shape[1])] for row in range(len(batch))]

    def _maps_of(self, batch: np.ndarray, classes: np.ndarray, computed: np.ndarray):
        """The maps of ``classes``: a pass of the method, or the ``computed`` ones for a
        method whose map does not depend on the class (EigenCAM)."""
        if not self.method.class_specific:
            return computed
        return self.method(batch, classes).maps


def _check(request: ExplainRequest) -> None:
    if request.class_from is not None and request.class_spec is not None:
        raise UsageProblem("give {class_spec} (one class for every image) or {class_from} "
                           "(a class per image), not both", ("class_spec", "class_from"))
    if request.skip_unknown_classes and request.class_from is None:
        raise UsageProblem("{skip_unknown_classes} goes with {class_from}",
                           ("skip_unknown_classes", "class_from"))
    if request.method is None and (request.top_k_maps is not None
                                   or request.metric_steps is not None):
        raise UsageProblem("{top_k_maps} and {metric_steps} need a method",
                           ("top_k_maps", "metric_steps"))
    if request.metric_steps is not None and request.metric_steps < 1:
        raise UsageProblem("{metric_steps} must be at least 1", ("metric_steps",))
    scorecam_default = default(ExplainRequest, "scorecam_batch")
    if request.method != "scorecam" and (request.max_maps is not None
                                         or request.scorecam_batch != scorecam_default):
        raise UsageProblem("{max_maps} and {scorecam_batch} apply to the scorecam method only",
                           ("max_maps", "scorecam_batch"))


def _maps_or_none(explanation) -> list:
    if explanation.maps is None:
        return [None] * len(explanation.class_index)
    return list(explanation.maps)


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
class ImageResult:
    """What the pipeline found for one input.

    Attributes:
        item: the input as given to `explain_stream` (anything with a ``path``).
        image: the decoded RGB photo (original size); None on error.
        probabilities: class probabilities; None on error.
        maps: the image's maps, one by default or one per rank (`ExplainedMap`); empty
            on error.
        metrics: the faithfulness metrics of the first map, when asked for.
        error: why the input failed (None when it did not).
    """

    item: Any
    image: np.ndarray | None = None
    probabilities: np.ndarray | None = None
    maps: list[ExplainedMap] = field(default_factory=list)
    metrics: dict | None = None
    error: str | None = None

    def top(self, k: int, labels) -> list[list]:
        """The k most probable classes, best first, as ``[index, label, probability]``."""
        if self.probabilities is None:
            return []
        return [[int(i), labels.name(int(i)), float(self.probabilities[i])]
                for i in rank_classes(self.probabilities, k)]


def _decode(item: HasPath, size: tuple[int, int]):
    problem = getattr(item, "problem", None)
    if problem:  # e.g. a class the model does not have: nothing to decode
        return problem, None
    try:
        rgb = load_rgb(item.path)
        return rgb, resize_for_model(rgb, size)
    except ImageError as exc:
        return exc.reason, None
    except MemoryError:
        return "out of memory while decoding", None
    except Exception as exc:  # one bad file must not end a run of 100,000: record it
        return f"cannot decode ({type(exc).__name__}: {exc})", None


def _chunks(items: Iterable[HasPath], size: int) -> Iterator[list[HasPath]]:
    iterator = iter(items)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk


def explain_stream(items: Iterable[HasPath], explainer: Explainer,
                   batch_size: int = DEFAULT_BATCH_SIZE,
                   workers: int = default(BatchOptions, "workers")) -> Iterator[ImageResult]:
    """Explain ``items`` lazily, in order, one model call per batch.

    Decoding runs in ``workers`` threads one batch ahead of the model, so the model never
    waits for the disk once started. A file that cannot be decoded becomes an
    `ImageResult` with ``error`` set; the others in its batch go on.
    """
    for decoded in decoded_batches(items, explainer.loaded.input_size, batch_size, workers):
        yield from _run_batch(decoded, explainer)


def decoded_batches(items: Iterable[HasPath], size: tuple[int, int], batch_size: int,
                    workers: int) -> Iterator[list[tuple]]:
    """``items`` decoded and resized to ``size`` in ``workers`` threads, one batch ahead of
    the consumer: per batch, ``(item, photo, resized)`` per input, or ``(item, reason,
    None)`` for one that cannot be decoded."""
    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="decode") as pool:
        pending: deque = deque()
        for chunk in _chunks(items, batch_size):
            pending.append([(item, pool.submit(_decode, item, size)) for item in chunk])
            if len(pending) > 1:
                yield [(item, *future.result()) for item, future in pending.popleft()]
        while pending:
            yield [(item, *future.result()) for item, future in pending.popleft()]


def _run_batch(decoded: list[tuple], explainer: Explainer) -> list[ImageResult]:
    results, good, tensors = [], [], []
    for item, rgb, resized in decoded:
        if resized is None:
            results.append(ImageResult(item, error=rgb))
        else:
            results.append(ImageResult(item, image=rgb))
            good.append(len(results) - 1)
            tensors.append(resized)
    if good:
        resized = np.stack(tensors)
        requested = [getattr(results[position].item, "requested_class", None)
                     for position in good]
        probabilities, maps = explainer(resized, np.array(
            [TOP1 if asked is None else asked for asked in requested], np.int32))
        scores = (explainer.faithfulness(resized, probabilities, maps)
                  if explainer.metrics_steps else None)
        for row, position in enumerate(good):
            result = results[position]
            result.probabilities = probabilities[row]
            result.maps = maps[row]
            if scores is not None:
                result.metrics = scores.record(row)
    return results


def open_explainer(model: ModelRequest = ModelRequest(),
                   explain: ExplainRequest = ExplainRequest(), progress=None) -> Explainer:
    """Pick the device, load the model and split it at the target layer, in that order.

    ``progress``: Score-CAM's progress hook (see `Explainer`).
    """
    from camcli.backend import apply_precision, resolve_precision, select_device
    from camcli.models import load

    _check(explain)
    device_name = select_device(model.device)
    precision = resolve_precision(model.precision, device_name)
    with tensorflow().device(device_name):
        loaded = load(model.model, weights=model.weights, preprocess=model.preprocess,
                      labels_file=model.labels_file,
                      unsafe_model_code=model.unsafe_model_code)
        apply_precision(loaded.model, precision)
    loaded.precision = precision
    log.info("model: %s (input %dx%d, preprocessing %s)", loaded.name, loaded.input_size[1],
             loaded.input_size[0], loaded.preprocess)
    return Explainer(loaded, explain, device=device_name, progress=progress)
