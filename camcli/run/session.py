"""What a command opens once, before its first image: the device, the model, the compute
object and the plan of what to explain, from the command's request objects.

    ModelRequest + ExplainRequest -> open_session -> Session
        (select_device, resolve_precision, models.load, build_explainer, TargetPlan)

The single-image commands and both batch engines run a `Session`; it gives the pipeline
its inputs' classes (`Session.assigner`, from ``--class-from``) and the drawing its
``box_threshold``, so the compute layer (`camcli.compute.explainer`) never sees either.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from camcli.compute.explainer import (
    Explainer,
    build_explainer,
    check_method_options,
    chosen_method,
)
from camcli.compute.models import LoadedModel
from camcli.compute.targets import TargetPlan
from camcli.errors import UsageProblem
from camcli.io.inputs import InputItem
from camcli.io.storage import Storage, resolved
from camcli.options import DEFAULT_BATCH_SIZE, BatchOptions, ExplainRequest, ModelRequest, default
from camcli.run.classes import FOLDER, ClassAssigner
from camcli.run.pipeline import ImageResult, explain_stream

log = logging.getLogger("camcli")


@dataclass(frozen=True)
class Session:
    """A loaded model ready to explain as asked.

    Attributes:
        loaded: the model and how to feed and read it.
        explainer: the compute object.
        plan: which classes each image's maps explain.
        request: what was asked (for the options the compute layer does not take:
            classes per image, metrics, boxes).
        storage: where the inputs, tables and outputs are read and written.
    """

    loaded: LoadedModel
    explainer: Explainer
    plan: TargetPlan
    request: ExplainRequest
    storage: Storage = field(default_factory=Storage)

    @classmethod
    def create(cls, loaded: LoadedModel, request: ExplainRequest = ExplainRequest(),
               device: str | None = None, progress=None, storage: Storage | None = None
               ) -> Session:
        """A session on a model already loaded (``device``: where to run, None: where
        TensorFlow places it; ``progress``: see `camcli.compute.explainer.build_explainer`;
        ``storage``: where it reads and writes, default: fsspec's own settings).

        Raises:
            UsageProblem: conflicting parameters; LayerError, CamNotApplicable,
                ClassError: the request does not fit the model.
        """
        check(request)
        request = chosen_method(request, loaded.model)
        explainer = build_explainer(loaded, request, device, progress)
        return cls(loaded, explainer, plan_of(request, loaded, explainer.num_classes), request,
                   resolved(storage))

    @property
    def labels(self):
        return self.loaded.labels

    @property
    def box_threshold(self) -> float | None:
        """The threshold of the maps' boxes, or None when no box is asked for."""
        return self.request.box_threshold if self.request.boxes else None

    @functools.cached_property
    def assigner(self) -> ClassAssigner | None:
        """With ``class_from``: what gives each input its class (read on first use, so a
        Ray actor, which only explains, never opens the table)."""
        if self.request.class_from is None:
            return None
        return ClassAssigner(self.request.class_from, self.loaded.labels,
                             self.explainer.num_classes, self.request.skip_unknown_classes,
                             self.storage)

    def stream(self, items: Iterable[InputItem], batch_size: int = DEFAULT_BATCH_SIZE,
               workers: int = default(BatchOptions, "workers")) -> Iterator[ImageResult]:
        """`camcli.run.pipeline.explain_stream` with this session's explainer, plan and
        metrics."""
        return explain_stream(items, self.explainer, self.plan, batch_size, workers,
                              self.request.metric_steps, self.request.road, self.storage)


def plan_of(request: ExplainRequest, loaded: LoadedModel, num_classes: int) -> TargetPlan:
    """The request's `TargetPlan` (``--class`` resolved through the model's labels).

    Raises:
        ClassError: ``class_spec`` names no class of the model.
    """
    fixed = (None if request.class_spec is None
             else loaded.labels.resolve(request.class_spec, num_classes))
    source = None
    if request.class_from is not None:
        source = FOLDER if request.class_from == FOLDER else "file"
    top_k = None if request.top_k_maps is None else min(request.top_k_maps, num_classes)
    return TargetPlan(fixed, source, top_k)


def check(request: ExplainRequest) -> None:
    """Refuse requests whose parameters conflict, before anything is loaded.

    Raises:
        UsageProblem: naming the parameters.
    """
    if request.class_from is not None and request.class_spec is not None:
        raise UsageProblem("give {class_spec} (one class for every image) or {class_from} "
                           "(a class per image), not both", ("class_spec", "class_from"))
    if request.skip_unknown_classes and request.class_from is None:
        raise UsageProblem("{skip_unknown_classes} goes with {class_from}",
                           ("skip_unknown_classes", "class_from"))
    if request.method is None and (request.top_k_maps is not None
                                   or request.metric_steps is not None or request.road):
        raise UsageProblem("{top_k_maps} and the metrics need a method", ("top_k_maps",))
    if request.metric_steps is not None and request.metric_steps < 1:
        raise UsageProblem("{metric_steps} must be at least 1", ("metric_steps",))
    check_method_options(request)


def open_session(model: ModelRequest = ModelRequest(),
                 explain: ExplainRequest = ExplainRequest(), progress=None,
                 storage: Storage | None = None) -> Session:
    """Pick the device, load the model in the precision asked, split it at the target
    layer and plan the targets, in that order (a bad request fails before the model
    loads).

    ``progress``: the hook of methods that show their own progress (Score-CAM);
    ``storage``: where the model file, labels, inputs and outputs are read and written.
    """
    storage = resolved(storage)
    check(explain)
    loaded, device = load_model(model, storage)
    return Session.create(loaded, explain, device, progress, storage)


def load_model(model: ModelRequest = ModelRequest(), storage: Storage | None = None
               ) -> tuple[LoadedModel, str]:
    """Pick the device, then load the model there in the precision asked: ``(loaded,
    device)``."""
    from camcli.compute.backend import resolve_precision, select_device, tensorflow
    from camcli.compute.models import load

    storage = resolved(storage)
    device = select_device(model.device)
    precision = resolve_precision(model.precision, device)
    with tensorflow().device(device):
        loaded = load(model.model, weights=model.weights, preprocess=model.preprocess,
                      labels_file=model.labels_file,
                      unsafe_model_code=model.unsafe_model_code, precision=precision,
                      storage=storage)
    log.info("model: %s (input %dx%d, preprocessing %s)", loaded.name, loaded.input_size[1],
             loaded.input_size[0], loaded.preprocess)
    return loaded, device
