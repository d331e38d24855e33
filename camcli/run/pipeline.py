"""The shared pipeline: inputs in, one forward pass per batch, per-image results out.

    inputs -> decode (worker threads, one batch ahead) -> resize -> batch
           -> Explainer (maps, probabilities) [-> faithfulness metrics] -> ImageResult

Every command uses it: ``predict`` reads the probabilities, ``cam`` / ``gradcam`` /
``explain`` draw each image's maps (`camcli.run.single`), ``batch`` adds output names, a
manifest and resume (`camcli.run.batch`). It takes plain `camcli.io.inputs.InputItem` values
(a path, and the class asked of it or why it cannot be done) and yields one `ImageResult`
per input, in order; what a caller attaches to an input (a batch job) stays with the
caller, which joins the results back by that order.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np

from camcli.compute.explainer import ExplainedMap, Explainer
from camcli.compute.methods import rank_classes
from camcli.compute.targets import TargetPlan
from camcli.errors import ImageError
from camcli.io.images import load_rgb, resize_for_model
from camcli.io.inputs import InputItem
from camcli.io.storage import Storage, resolved
from camcli.options import DEFAULT_BATCH_SIZE, BatchOptions, default

T = TypeVar("T")


@dataclass
class ImageResult:
    """What the pipeline found for one input.

    Attributes:
        input: the input, as given.
        image: the decoded RGB photo (original size); None on error.
        probabilities: class probabilities; None on error.
        maps: the image's maps, one by default or one per rank (`ExplainedMap`); empty
            on error.
        metrics: the faithfulness metrics of the first map, when asked for.
        error: why the input failed (None when it did not).
    """

    input: InputItem
    image: np.ndarray | None = None
    probabilities: np.ndarray | None = None
    maps: list[ExplainedMap] = field(default_factory=list)
    metrics: dict | None = None
    error: str | None = None

    def top(self, k: int, labels) -> list[list]:
        """The k most probable classes, best first, as ``[index, label, probability]``."""
        return top_classes(self.probabilities, k, labels)


def top_classes(probabilities: np.ndarray | None, k: int, labels) -> list[list]:
    """The k most probable classes, best first, as ``[index, label, probability]`` (none
    without probabilities: an input that failed)."""
    if probabilities is None:
        return []
    return [[int(i), labels.name(int(i)), float(probabilities[i])]
            for i in rank_classes(probabilities, k)]


def batched(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """``items`` in lists of ``size`` (the last may be shorter), lazily."""
    iterator = iter(items)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk


def _decode(item: InputItem, size: tuple[int, int], storage: Storage):
    if item.problem:  # e.g. a class the model does not have: nothing to decode
        return item.problem, None
    if item.pixels is not None:  # given in memory (the Python API): decoded already
        return item.pixels, resize_for_model(item.pixels, size)
    try:
        rgb = load_rgb(item.path, storage)
        return rgb, resize_for_model(rgb, size)
    except ImageError as exc:
        return exc.reason, None
    except MemoryError:
        return "out of memory while decoding", None
    except Exception as exc:  # one bad file must not end a run of 100,000: record it
        return f"cannot decode ({type(exc).__name__}: {exc})", None


def decoded_batches(items: Iterable[InputItem], size: tuple[int, int], batch_size: int,
                    workers: int, storage: Storage | None = None) -> Iterator[list[tuple]]:
    """``items`` decoded and resized to ``size`` in ``workers`` threads, one batch ahead of
    the consumer: per batch, ``(item, photo, resized)`` per input, or ``(item, reason,
    None)`` for one that cannot be decoded."""
    storage = resolved(storage)
    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="decode") as pool:
        pending: deque = deque()
        for chunk in batched(items, batch_size):
            pending.append([(item, pool.submit(_decode, item, size, storage)) for item in chunk])
            if len(pending) > 1:
                yield [(item, *future.result()) for item, future in pending.popleft()]
        while pending:
            yield [(item, *future.result()) for item, future in pending.popleft()]


def explain_stream(items: Iterable[InputItem], explainer: Explainer,
                   plan: TargetPlan = TargetPlan(), batch_size: int = DEFAULT_BATCH_SIZE,
                   workers: int = default(BatchOptions, "workers"),
                   metric_steps: int | None = None, road: bool = False,
                   storage: Storage | None = None) -> Iterator[ImageResult]:
    """Explain ``items`` lazily, in order, one model call per batch.

    ``plan`` says which classes to explain (each input's ``requested_class`` where the
    plan asks a class per image); ``metric_steps`` adds the faithfulness metrics of each
    image's first map, ``road`` its ROAD scores. Decoding runs in ``workers`` threads one
    batch ahead of the model, so the model never waits for the disk once started. A file
    that cannot be decoded becomes an `ImageResult` with ``error`` set; the others in its
    batch go on.
    """
    for decoded in decoded_batches(items, explainer.input_size, batch_size, workers, storage):
        yield from _explain_batch(decoded, explainer, plan, metric_steps, road)


def _metrics(explainer: Explainer, resized: np.ndarray, explained, metric_steps: int | None,
             road: bool) -> list:
    """The metrics of each image's first map (`camcli.analysis.metrics`): faithfulness
    with ``metric_steps``, ROAD with ``road``; all perturbed images of the batch go
    through the model together, in chunks."""
    if not (metric_steps or road):
        return []
    from camcli.analysis import metrics

    first = explainer.first_maps(explained)
    chunk = max(len(resized), 32)
    scores = []
    if metric_steps:
        scores.append(metrics.faithfulness(explainer.probability_of, resized, *first,
                                           metric_steps, batch_size=chunk))
    if road:
        scores.append(metrics.road(explainer.probability_of, resized, *first,
                                   batch_size=chunk))
    return scores


def _explain_batch(decoded: list[tuple], explainer: Explainer, plan: TargetPlan,
                   metric_steps: int | None, road: bool = False) -> list[ImageResult]:
    results = [ImageResult(item, error=rgb) if resized is None else ImageResult(item, rgb)
               for item, rgb, resized in decoded]
    good = [(result, resized) for result, (_, _, resized) in zip(results, decoded, strict=True)
            if resized is not None]
    if not good:
        return results
    resized = np.stack([pixels for _, pixels in good])
    targets = plan.targets([result.input.requested_class for result, _ in good])
    explained = explainer(resized, targets)
    scores = _metrics(explainer, resized, explained, metric_steps, road)
    for row, (result, _) in enumerate(good):
        result.probabilities = explained.probabilities[row]
        result.maps = explained.maps[row]
        if scores:
            result.metrics = {k: v for score in scores for k, v in score.record(row).items()}
    return results
