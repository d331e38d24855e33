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
from dataclasses import dataclass

import numpy as np

from camcli.backend import tensorflow
from camcli.errors import ImageError, UsageProblem
from camcli.images import load_rgb, resize_for_model
from camcli.inputs import InputItem
from camcli.methods import METHODS, TOP1, Explanation, Predictor
from camcli.models import LoadedModel, graph
from camcli.models.preprocess import preprocess

log = logging.getLogger("camcli")


class Explainer:
    """A loaded model, split at its target layer, with a method (or prediction only).

    Args:
        loaded: from `camcli.models.load`.
        method: a key of `camcli.methods.METHODS`, or None to predict only.
        layer: target layer name or path (default: the model's registered layer, else
            found automatically).
        class_spec: the class to explain for every image (index, WordNet id or name);
            None explains each image's top-1 prediction.
        device: TensorFlow device name to run on (None: TensorFlow's choice).
        method_options: keyword arguments for the method (Score-CAM: ``batch_size``,
            ``max_maps``, ``progress``).
        top_k_maps: also explain each image's top-K classes, one map per class.
        metrics_steps: compute the faithfulness metrics (`camcli.metrics`) of each map
            with this many deletion/insertion steps (None: no metrics).

    Raises:
        LayerError, CamNotApplicable, ClassError: the request does not fit the model.
        UsageProblem: conflicting options.
    """

    def __init__(self, loaded: LoadedModel, method: str | None = "gradcam",
                 layer: str | None = None, class_spec: str | int | None = None,
                 device: str | None = None, method_options: dict | None = None,
                 top_k_maps: int | None = None, metrics_steps: int | None = None):
        self.loaded = loaded
        self.device = device
        self.method_name = method
        if top_k_maps is not None and class_spec is not None:
            raise UsageProblem("--top-k-maps explains the top classes: it cannot go with --class")
        if top_k_maps is not None and not method:
            raise UsageProblem("--top-k-maps needs a method")
        if metrics_steps is not None and (not method or metrics_steps < 1):
            raise UsageProblem("metrics need a method and at least one step")
        self.metrics_steps = metrics_steps
        source = "--layer" if layer else f"the registered layer of {loaded.name}"
        self.graph = graph.build(loaded.model, layer or loaded.default_layer, source)
        self.method = (METHODS[method](self.graph, **(method_options or {})) if method
                       else Predictor(self.graph))
        if top_k_maps is not None:
            top_k_maps = min(top_k_maps, self.graph.num_classes)
        self.top_k_maps = top_k_maps
        self._scorer = Predictor(self.graph) if metrics_steps else None
        self.class_index = (
            TOP1 if class_spec is None
            else loaded.labels.resolve(class_spec, self.graph.num_classes)
        )

    @property
    def layer(self) -> str:
        return self.graph.layer

    def __call__(self, resized: np.ndarray) -> Explanation:
        """Explain a float32 RGB batch already resized to the model's input size.

        With ``top_k_maps``, the explanation's ``ranked_classes`` / ``ranked_maps`` hold one
        map per top class (rank 1 first), each from its own pass of the method.
        """
        batch = preprocess(self.loaded.preprocess, resized)
        with self._on_device():
            explanation = self.method(batch, self.class_index)
            if self.top_k_maps:
                self._rank(batch, explanation)
        return explanation

    def _on_device(self):
        """Run on the chosen device (``open_explainer``), else where TensorFlow places it."""
        if self.device is None:
            return contextlib.nullcontext()
        return tensorflow().device(self.device)

    def probability_of(self, resized: np.ndarray, classes: np.ndarray) -> np.ndarray:
        """Probabilities of ``classes`` (one per image) for RGB [0, 255] model inputs."""
        batch = preprocess(self.loaded.preprocess, resized)
        with self._on_device():
            explanation = self._scorer(batch, np.asarray(classes, np.int32))
        return explanation.probabilities[np.arange(len(batch)), explanation.class_index]

    def faithfulness(self, resized: np.ndarray, explanation: Explanation):
        """The metrics of each image's (rank-1) map: a `camcli.metrics.Faithfulness`."""
        from camcli.metrics import faithfulness

        rows = np.arange(len(resized))
        original = explanation.probabilities[rows, explanation.class_index]
        return faithfulness(self.probability_of, resized, explanation.maps,
                            explanation.class_index, original, self.metrics_steps,
                            batch_size=max(len(resized), 32))

    def _rank(self, batch: np.ndarray, explanation: Explanation) -> None:
        order = np.argsort(-explanation.probabilities, axis=1, kind="stable")
        ranked = order[:, :self.top_k_maps].astype(np.int32)
        maps = [explanation.maps]  # rank 1 is the top-1 map already computed
        for rank in range(1, ranked.shape[1]):
            if not self.method.class_specific:
                maps.append(explanation.maps)  # e.g. EigenCAM: the same map for any class
            else:
                maps.append(self.method(batch, ranked[:, rank]).maps)
        explanation.ranked_classes = ranked
        explanation.ranked_maps = np.stack(maps, axis=1)


@dataclass
class ImageResult:
    """What the pipeline found for one input.

    Attributes:
        item: the input.
        image: the decoded RGB photo (original size); None on error.
        probabilities: class probabilities; None on error.
        class_index: the explained class; None on error.
        heatmap: the [0, 1] map at feature-map resolution; None on error or when predicting.
        ranked: with --top-k-maps, ``[(class_index, heatmap), ...]`` for ranks 1..K.
        metrics: the faithfulness metrics of the (rank-1) map, when asked for.
        error: why the input failed (None when it did not).
    """

    item: InputItem
    image: np.ndarray | None = None
    probabilities: np.ndarray | None = None
    class_index: int | None = None
    heatmap: np.ndarray | None = None
    ranked: list[tuple[int, np.ndarray]] | None = None
    metrics: dict | None = None
    error: str | None = None

    @property
    def score(self) -> float | None:
        """Probability of the explained class."""
        if self.probabilities is None or self.class_index is None:
            return None
        return float(self.probabilities[self.class_index])

    def top(self, k: int, labels) -> list[list]:
        """The k most probable classes, best first, as ``[index, label, probability]``."""
        if self.probabilities is None:
            return []
        k = min(k, len(self.probabilities))
        best = np.argpartition(-self.probabilities, k - 1)[:k]
        best = best[np.argsort(-self.probabilities[best], kind="stable")]
        return [[int(i), labels.name(int(i)), float(self.probabilities[i])] for i in best]


def _decode(item: InputItem, size: tuple[int, int]):
    try:
        rgb = load_rgb(item.path)
        return rgb, resize_for_model(rgb, size)
    except ImageError as exc:
        return exc.reason, None
    except MemoryError:
        return "out of memory while decoding", None
    except Exception as exc:  # one bad file must not end a run of 100,000: record it
        return f"cannot decode ({type(exc).__name__}: {exc})", None


def _chunks(items: Iterable[InputItem], size: int) -> Iterator[list[InputItem]]:
    iterator = iter(items)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk


def explain_stream(items: Iterable[InputItem], explainer: Explainer, batch_size: int = 32,
                   workers: int = 2) -> Iterator[ImageResult]:
    """Explain ``items`` lazily, in order, one model call per batch.

    Decoding runs in ``workers`` threads one batch ahead of the model, so the model never
    waits for the disk once started. A file that cannot be decoded becomes an
    `ImageResult` with ``error`` set; the others in its batch go on.
    """
    size = explainer.loaded.input_size
    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="decode") as pool:
        pending: deque = deque()
        for chunk in _chunks(items, batch_size):
            pending.append([(item, pool.submit(_decode, item, size)) for item in chunk])
            if len(pending) > 1:
                yield from _run_batch(pending.popleft(), explainer)
        while pending:
            yield from _run_batch(pending.popleft(), explainer)


def _run_batch(submitted, explainer: Explainer) -> list[ImageResult]:
    results, good, tensors = [], [], []
    for item, future in submitted:
        rgb, resized = future.result()
        if resized is None:
            results.append(ImageResult(item, error=rgb))
        else:
            results.append(ImageResult(item, image=rgb))
            good.append(len(results) - 1)
            tensors.append(resized)
    if good:
        resized = np.stack(tensors)
        explanation = explainer(resized)
        scores = explainer.faithfulness(resized, explanation) if explainer.metrics_steps else None
        for row, position in enumerate(good):
            result = results[position]
            result.probabilities = explanation.probabilities[row]
            result.class_index = int(explanation.class_index[row])
            if explanation.maps is not None:
                result.heatmap = explanation.maps[row]
            if scores is not None:
                result.metrics = scores.record(row)
            if explanation.ranked_maps is not None:
                result.ranked = [(int(c), m) for c, m in zip(explanation.ranked_classes[row],
                                                             explanation.ranked_maps[row],
                                                             strict=True)]
    return results


def open_explainer(model: str | None = None, weights: str | None = "imagenet",
                   labels_file: str | None = None, preprocess: str | None = None,
                   layer: str | None = None, class_spec: str | int | None = None,
                   device: str | None = None, method: str | None = "gradcam",
                   method_options: dict | None = None,
                   top_k_maps: int | None = None,
                   unsafe_model_code: bool = False, precision: str = "fp32",
                   metrics_steps: int | None = None) -> Explainer:
    """Pick the device, load the model and split it at the target layer, in that order.

    Args: as the CLI's shared options (``None``: the default).
    """
    from camcli.backend import apply_precision, resolve_precision, select_device
    from camcli.models import DEFAULT_MODEL, load

    device_name = select_device(device)
    precision = resolve_precision(precision, device_name)
    with tensorflow().device(device_name):
        loaded = load(model or DEFAULT_MODEL, weights=weights, preprocess=preprocess,
                      labels_file=labels_file, unsafe_model_code=unsafe_model_code)
        apply_precision(loaded.model, precision)
    log.info("model: %s (input %dx%d, preprocessing %s)", loaded.name, loaded.input_size[1],
             loaded.input_size[0], loaded.preprocess)
    return Explainer(loaded, method=method, layer=layer, class_spec=class_spec,
                     device=device_name, method_options=method_options, top_k_maps=top_k_maps,
                     metrics_steps=metrics_steps)
