"""``camcli evaluate``: which method's heatmaps to believe on this model, from one run over
a seeded sample of the user's own photos.

    inputs -> seeded sample -> decode, resize -> the model's classes (top-1, --class,
    --class-from) -> per method: the maps (kept at the input size, `at_input_size`) ->
        random logit, ROAD, deletion / insertion, Max-Sensitivity, Sparseness,
        Complexity, localisation (--truth), seconds per image
    -> the randomisation cascade (`camcli.compute.models.randomise`): per step, the model
       randomised in place once, every method's maps of the sample -> Spearman and SSIM
       against the original maps
    -> the verdict (`camcli.analysis.scorecard.recommend`) -> evaluate.json, the report
       page (evaluate.html), the table

Every measure reads the original maps computed once. The model comes back unchanged
(`Randomiser.applied`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from camcli.analysis import metrics, scorecard
from camcli.analysis import score as scoring
from camcli.compute.explainer import Explainer
from camcli.compute.methods import METHODS, rank_classes
from camcli.errors import CamcliError, OutputError, UsageProblem
from camcli.io import locations
from camcli.io.inputs import InputItem, check_inputs, discover
from camcli.io.storage import Storage, resolved
from camcli.options import (
    DEFAULT_METRIC_STEPS,
    EVALUATE_SKIPPED,
    EvaluateOptions,
    ExplainRequest,
    ModelRequest,
)
from camcli.run.pipeline import decoded_batches
from camcli.run.session import Session, check, load_model

log = logging.getLogger("camcli")

JSON_NAME, PAGE_NAME = "evaluate.json", "evaluate.html"
#: The figure's maps are this many pixels wide.
FIGURE_WIDTH = 112


class _Quiet:
    def update(self, count: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def _quiet(phase: str, total: int):
    return _Quiet()


@dataclass
class Sample:
    """The photos scored: their model inputs and what the model says of them."""

    items: list[InputItem]
    resized: np.ndarray  # (n, H, W, 3) float32 RGB [0, 255]
    sizes: list[tuple[int, int]]  # each photo's (width, height)
    first_photo: np.ndarray  # the first photo, for the figure
    classes: np.ndarray = None  # (n,) the explained class
    top1: np.ndarray = None  # (n,) the model's top-1
    probability: np.ndarray = None  # (n,) the explained class's probability
    failed: list = field(default_factory=list)  # (path, reason)


@dataclass
class Scored:
    """One method's maps and measures."""

    name: str
    session: Session
    given: list = None  # the original maps, as the method gives them
    row: dict = field(default_factory=dict)
    spearman: list = field(default_factory=list)
    ssim: list = field(default_factory=list)
    figure: list = field(default_factory=list)  # the first photo's maps, step by step


@dataclass
class Evaluation:
    document: dict
    json_path: str
    page_path: str


def evaluate(inputs: list[str], model: ModelRequest, explain: ExplainRequest,
             options: EvaluateOptions, progress: Callable = _quiet,
             storage: Storage | None = None) -> Evaluation:
    """Score the methods on ``model`` over a seeded sample of ``inputs`` and write
    ``evaluate.json`` and ``evaluate.html`` into ``options.out_dir``.

    ``explain`` gives the target rules (``--class``, ``--class-from``) and the layers;
    ``progress(phase, total)`` returns a bar with ``update()`` and ``close()``.

    Raises:
        UsageProblem: a method named that does not apply to the model, no input left.
        InputNotFound: an input names nothing.
        OutputError: ``options.out_dir`` cannot be written (before any work).
    """
    started = time.perf_counter()
    storage = resolved(storage)
    check_inputs(inputs, storage)
    check(explain)
    store = storage.store(options.out_dir)
    try:  # before the work, not after it
        store.check_writable(options.out_dir)
    except OSError as exc:
        raise OutputError(f"cannot write to output folder {options.out_dir}: "
                          f"{exc.strerror or exc}") from None
    loaded, device = load_model(model, storage)
    methods, skipped = _methods(loaded, explain, options, device, storage)
    sample = _sample(inputs, methods[0].session, options, storage)
    first = methods[0].session.explainer
    _classes(sample, methods[0].session, options.batch_size)
    noisy = _noise(sample, first, options)
    truth = _truth(sample, methods[0].session, options, storage)
    seconds = {"loading": time.perf_counter() - started}

    bar = progress("methods", len(methods))
    for scored in methods:
        _score(scored, sample, noisy, truth, options)
        bar.update()
    bar.close()
    seconds["measures"] = time.perf_counter() - started - sum(seconds.values())
    _cascade(methods, sample, options, progress)
    seconds["randomisation"] = time.perf_counter() - started - sum(seconds.values())

    document = _document(loaded, sample, methods, skipped, noisy, options,
                         methods[0].session)
    document["seconds"] = {key: round(value, 3) for key, value in seconds.items()}
    json_path = locations.join(options.out_dir, JSON_NAME)
    page_path = locations.join(options.out_dir, PAGE_NAME)
    store.write_atomic(json_path, (json.dumps(document, indent=2) + "\n").encode())
    store.write_atomic(page_path, scorecard.page(document, _figures(methods, sample))
                       .encode())
    return Evaluation(document, json_path, page_path)


def _methods(loaded, explain: ExplainRequest, options: EvaluateOptions, device,
             storage) -> tuple[list[Scored], list[dict]]:
    """The methods scored (a `Session` each) and those left out, with why."""
    named = [m for m in options.methods if m != "all"]
    unknown = [m for m in named if m not in METHODS]
    if unknown:
        raise UsageProblem(f"{{methods}}: no method {', '.join(map(repr, unknown))}; "
                           f"'camcli methods' lists them", ("methods",))
    if named:
        wanted = list(dict.fromkeys(named))
    else:
        wanted = [m for m in METHODS if "all" in options.methods or m not in EVALUATE_SKIPPED]
    methods, skipped = [], []
    for name in wanted:
        request = dataclasses.replace(explain, method=name)
        try:
            session = Session.create(loaded, request, device, None, storage)
        except CamcliError as exc:
            if named:
                raise UsageProblem(f"{{methods}}: {name} does not apply to this model: "
                                   f"{exc}", ("methods",)) from exc
            log.info("evaluate: %s left out: %s", name, exc)
            skipped.append({"method": name, "reason": str(exc)})
            continue
        methods.append(Scored(name, session))
    if not methods:
        raise UsageProblem("no method applies to this model ({methods})", ("methods",))
    return methods, skipped


def _sample(inputs, session: Session, options: EvaluateOptions, storage) -> Sample:
    """The seeded sample, decoded and resized (inputs that cannot be are said and left
    out)."""
    listed = list(discover(inputs, options.patterns, exclude=options.out_dir,
                           storage=storage))
    if session.assigner is not None:
        session.assigner.check(listed)
        listed = list(session.assigner.assign(listed))
    usable = [item for item in listed if not item.problem]
    for item in listed:
        if item.problem:
            log.warning("%s: %s", item.path, item.problem)
    if not usable:
        raise UsageProblem("no input to evaluate on (INPUT...)")
    if options.sample < len(usable):
        chosen = np.random.default_rng(options.seed).choice(len(usable), options.sample,
                                                            replace=False)
        usable = [usable[i] for i in sorted(chosen)]
    items, resized, sizes, failed, first = [], [], [], [], None
    size = session.explainer.input_size
    for batch in decoded_batches(usable, size, options.batch_size, options.workers,
                                 storage):
        for item, photo, pixels in batch:
            if pixels is None:
                log.warning("Error: %s: %s", item.path, photo)
                failed.append((item.path, photo))
                continue
            items.append(item)
            resized.append(pixels)
            sizes.append((photo.shape[1], photo.shape[0]))
            first = photo if first is None else first
    if not items:
        raise UsageProblem("none of the inputs sampled could be read (INPUT...)")
    return Sample(items, np.stack(resized).astype(np.float32), sizes, first, failed=failed)


def _chunks(count: int, size: int):
    return [slice(i, min(i + size, count)) for i in range(0, count, size)]


def _classes(sample: Sample, session: Session, batch_size: int) -> None:
    """The explained class of each image (the plan's: top-1, --class or --class-from) and
    the model's top-1, from one prediction pass."""
    asked = session.plan.targets([item.requested_class for item in sample.items]).asked
    explainer = session.explainer
    probabilities, chosen = [], []
    for part in _chunks(len(sample.items), batch_size):
        p, c = explainer.predict(sample.resized[part], asked[part])
        probabilities.append(p)
        chosen.append(c)
    probabilities = np.concatenate(probabilities)
    sample.classes = np.concatenate(chosen).astype(np.int32)
    sample.top1 = rank_classes(probabilities, 1)[:, 0]
    sample.probability = probabilities[np.arange(len(probabilities)), sample.classes]


@dataclass
class Noise:
    """Max-Sensitivity's noisy copies: how each is drawn, and whether the model's top-1
    changed on it (``(K, n)``: such copies are left out)."""

    copies: int
    scale: float
    seed: int
    changed: np.ndarray

    def copy(self, sample: Sample, k: int, part: slice) -> np.ndarray:
        """Copy ``k`` of the images of ``part``: each image's noise is seeded by the run's
        seed, ``k`` and the image's place, so no batch or sample size changes it."""
        images = sample.resized[part]
        noise = [np.random.default_rng([self.seed, 1, k, index]).uniform(
            -self.scale, self.scale, images.shape[1:]) for index in
            range(part.start, part.stop)]
        return images + np.asarray(noise, np.float32)


def _noise(sample: Sample, explainer: Explainer, options: EvaluateOptions) -> Noise:
    noise = Noise(options.noise_copies, options.noise_range * 255.0, options.seed,
                  np.zeros((options.noise_copies, len(sample.items)), bool))
    for k in range(options.noise_copies):
        for part in _chunks(len(sample.items), options.batch_size):
            probabilities, _ = explainer.predict(noise.copy(sample, k, part),
                                                 sample.classes[part])
            noise.changed[k, part] = rank_classes(probabilities, 1)[:, 0] != sample.top1[part]
    return noise


def _truth(sample: Sample, session: Session, options: EvaluateOptions, storage):
    """With --truth: per image, the true boxes of its explained class (an empty list when
    the table has none for it); else None."""
    if options.truth is None:
        return None
    from camcli.io.labels import Resolver
    from camcli.io.tables import Table, read_table

    table = Table(read_table(options.truth, storage), options.truth)
    resolve = Resolver(session.labels, session.explainer.num_classes)
    boxes = []
    for item, index in zip(sample.items, sample.classes, strict=True):
        key = table.claim(item.path)
        rows = [] if key is None else table.rows[key]
        boxes.append([row.box for row in rows if row.box and row.label is not None
                      and resolve(row.label) == index])
    table.refuse_ambiguous()
    if not any(boxes):
        log.warning("evaluate: %s has no box of an explained class for the inputs "
                    "sampled; no localisation", options.truth)
    return boxes


def _given(session: Session, resized: np.ndarray, classes: np.ndarray, batch_size: int
           ) -> list:
    """The method's maps of ``classes`` as it gives them (its own resolution)."""
    found = []
    for part in _chunks(len(resized), batch_size):
        found.extend(session.explainer.maps_of(resized[part], classes[part])[0])
    return found


def _at_input(maps: list, size: tuple[int, int]) -> np.ndarray:
    """Maps as every measure takes them (`scorecard.at_input_size`), stacked."""
    return np.stack([scorecard.at_input_size(m, *size) for m in maps])


def _mean(values) -> float | None:
    values = np.asarray([v for v in values if v is not None], np.float64)
    values = values[np.isfinite(values)]
    return float(values.mean()) if values.size else None


def _score(scored: Scored, sample: Sample, noise: Noise, truth, options: EvaluateOptions
           ) -> None:
    """Everything measured on the model as it is, a batch of images at a time (the
    perturbed images of ROAD and deletion / insertion are many)."""
    session, batch = scored.session, options.batch_size
    explainer = session.explainer
    size = sample.resized.shape[1:3]
    count = len(sample.items)
    scored.given = _given(session, sample.resized, sample.classes, batch)
    kind = METHODS[scored.name]
    row = scored.row
    row.update(method=scored.name, baseline=kind.baseline, class_specific=kind.class_specific)
    # Random logit: a pass like any other, so it also times the method (traced by now).
    started = time.perf_counter()
    others = (scorecard.other_class(sample.classes, explainer.num_classes, options.seed)
              if explainer.num_classes > 1 else sample.classes)
    other_maps = _given(session, sample.resized, others, batch)
    row["seconds_per_image"] = (time.perf_counter() - started) / count
    logit, road, deletion, insertion, worst = [], [], [], [], np.full(count, np.nan)
    sparse, complex_ = [], []
    chunk = max(batch, 32)
    for part in _chunks(count, batch):
        maps = _at_input(scored.given[part], size)
        logit.extend(scorecard.ssim(a, b) for a, b in
                     zip(maps, _at_input(other_maps[part], size), strict=True))
        sparse.extend(scorecard.sparseness(m) for m in maps)
        complex_.extend(scorecard.complexity(m) for m in maps)
        images, classes = sample.resized[part], sample.classes[part]
        found = metrics.road(explainer.probability_of, images, maps, classes,
                             sample.probability[part], batch_size=chunk)
        road.extend(found.combined)
        faithful = metrics.faithfulness(explainer.probability_of, images, maps, classes,
                                        sample.probability[part], DEFAULT_METRIC_STEPS,
                                        batch_size=chunk)
        deletion.extend(faithful.deletion_auc)
        insertion.extend(faithful.insertion_auc)
        # Max-Sensitivity over the copies whose top-1 did not change.
        for k in range(noise.copies):
            kept = ~noise.changed[k, part]
            if not kept.any():
                continue
            copy = noise.copy(sample, k, part)[kept]
            noisy = _at_input(_given(session, copy, classes[kept], batch), size)
            for index, original, changed in zip(np.flatnonzero(kept) + part.start,
                                                maps[kept], noisy, strict=True):
                value = scorecard.max_sensitivity(original, [changed])
                if np.isfinite(value):
                    worst[index] = np.nanmax([worst[index], value])
    row["random_logit"] = _mean(logit) if explainer.num_classes > 1 else None
    row["road"], row["deletion_auc"] = _mean(road), _mean(deletion)
    row["insertion_auc"], row["max_sensitivity"] = _mean(insertion), _mean(worst)
    row["sparseness"], row["complexity"] = _mean(sparse), _mean(complex_)
    row["pointing"] = row["max_box_acc_v2"] = None
    if truth is not None and any(truth):
        from camcli.analysis.localise import upsample

        # As `camcli score` reads a saved map: the method's own map, upsampled to the photo.
        tally = scoring.Tally()
        for heatmap, boxes, (width, height) in zip(scored.given, truth, sample.sizes,
                                                   strict=True):
            if boxes:
                tally.add(scoring.localised(upsample(heatmap, width, height), boxes))
        rates = tally.rates()
        row["pointing"], row["max_box_acc_v2"] = rates["pointing"], rates["max_box_acc_v2"]
    scored.figure.append(_at_input(scored.given[:1], size)[0])


def _cascade(methods: list[Scored], sample: Sample, options: EvaluateOptions,
             progress: Callable) -> None:
    """The randomisation cascade: per step, the model randomised once (in place), then
    every method's maps of the sample against its original maps."""
    from camcli.compute.models.randomise import Randomiser, cascade, spread

    model = methods[0].session.loaded.model
    groups = cascade(model)
    steps = spread(len(groups), options.mprt_steps)
    randomiser = Randomiser(model, groups, options.seed)
    size = sample.resized.shape[1:3]
    bar = progress("randomisation", len(steps) * len(methods))
    with randomiser.applied():
        for step in steps:
            randomiser.through(step)
            for scored in methods:
                session = scored.session
                if METHODS[scored.name].copies_weights:
                    session = Session.create(session.loaded, session.request,
                                             session.explainer.device, None,
                                             session.storage)
                kept, similar, first = [], [], None
                for part in _chunks(len(sample.items), options.batch_size):
                    maps = _at_input(_given(session, sample.resized[part],
                                            sample.classes[part], options.batch_size), size)
                    originals = _at_input(scored.given[part], size)
                    kept.extend(scorecard.kept_order(a, b) for a, b in
                                zip(originals, maps, strict=True))
                    similar.extend(scorecard.ssim(a, b) for a, b in
                                   zip(originals, maps, strict=True))
                    first = maps[0] if first is None else first
                scored.spearman.append(_mean(kept))
                scored.ssim.append(_mean(similar))
                scored.figure.append(first)
                bar.update()
    bar.close()
    for scored in methods:
        passed, mean = scorecard.sanity_passed(scored.spearman)
        scored.row["sanity"] = {"passed": passed, "first_half_spearman": mean,
                                "steps": [groups[s].name for s in steps],
                                "spearman": scored.spearman, "ssim": scored.ssim}


def _document(loaded, sample: Sample, methods: list[Scored], skipped, noise: Noise,
              options: EvaluateOptions, session: Session) -> dict:
    rows = [scored.row for scored in methods]
    with_truth = any(row["pointing"] is not None for row in rows)
    recommended, ranks = scorecard.recommend(rows, with_truth)
    ordered = []
    for row, rank in zip(rows, ranks, strict=True):
        row["rank"] = rank
        ordered.append({key: row[key] for key in (
            "method", "sanity", "random_logit", "road", "deletion_auc", "insertion_auc",
            "max_sensitivity", "sparseness", "complexity", "pointing", "max_box_acc_v2",
            "seconds_per_image", "rank", "baseline", "class_specific")})
    kind, requested, source = session.plan.kind()
    return {
        "model": loaded.name,
        "images": len(sample.items),
        "target": kind,
        "class": None if requested is None else session.labels.name(requested),
        "class_from": session.request.class_from,
        "rule": scorecard.RULE,
        "recommended": recommended,
        "sanity_rule": scorecard.SANITY_RULE,
        "methods": ordered,
        "skipped": skipped,
        "noise": {"copies": noise.copies, "range": options.noise_range,
                  "changed_top1": int(noise.changed.sum()),
                  "of": int(noise.changed.size)},
        "seed": options.seed,
        "inputs": [locations.absolute(item.path) for item in sample.items],
        "failed": [{"input": locations.absolute(path), "error": reason}
                   for path, reason in sample.failed],
    }


def _figures(methods: list[Scored], sample: Sample) -> dict:
    """Per method, the first photo's maps (original, then each step) as JPEG bytes."""
    import cv2

    from camcli.run.render import encode_jpeg, overlay

    photo = sample.first_photo
    height = max(1, round(photo.shape[0] * FIGURE_WIDTH / photo.shape[1]))
    small = cv2.resize(photo, (FIGURE_WIDTH, height), interpolation=cv2.INTER_AREA)
    return {scored.name: [encode_jpeg(overlay(small, m, 0.5, "jet"), 85)
                          for m in scored.figure] for scored in methods}
