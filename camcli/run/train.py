"""``camcli train TREE -o MODEL.keras``: a CAM head for your own classes, on a CPU.

One class per sub-folder of ``TREE``. The backbone (a built-in model or a model file,
frozen) runs once over every image, through the same decoding pipeline as ``batch``; its
target layer's feature maps are pooled (global average) into one vector per image. A
``Dense(k, softmax)`` head is trained on those vectors with Keras: a seeded, stratified
validation split, early stopping on the validation loss, ``epochs`` as a cap. The result
is the backbone up to its target layer, global average pooling and the head — a
GAP -> Dense model, so ``cam`` works on it — saved as one ``.keras`` file that carries its
class names, preprocessing and target layer (`camcli.compute.models.metadata`); a JSON
report is written beside it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field

import numpy as np

from camcli.errors import UsageProblem
from camcli.io.inputs import InputItem, check_inputs, discover
from camcli.io.storage import Storage, resolved
from camcli.options import ExplainRequest, ModelRequest, TrainOptions

log = logging.getLogger("camcli")

#: Vectors per step of the head's optimizer.
HEAD_BATCH = 32
#: Optimizer steps before early stopping may stop: on a small tree an epoch is a few steps,
#: and the validation loss of a few images wobbles in the first ones (`bench/train.py`).
MIN_STEPS = 60


@dataclass
class TrainReport:
    """What a training run found; ``to_json`` is the report written beside the model."""

    model: str
    classes: list[str]
    counts: dict[str, dict[str, int]]
    val_top1: float | None = None
    val_top5: float | None = None
    per_class: dict[str, float | None] = field(default_factory=dict)
    confused: list[dict] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)
    epochs: int = 0
    seconds: float = 0.0
    backbone: str = ""
    target_layer: str = ""
    command: str = ""
    seed: int = 0
    augment: bool = False

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


def classes_of(tree: str, patterns=None, storage: Storage | None = None
               ) -> tuple[list[str], dict[str, list[InputItem]], list]:
    """The class folders of ``tree`` and their images (walked as ``batch`` walks), and the
    images outside any class folder.

    Raises:
        UsageProblem: fewer than two classes, or a class with fewer than two images.
    """
    storage = resolved(storage)
    check_inputs([tree], storage)
    if not storage.store(tree).isdir(tree):
        raise UsageProblem(f"{tree} is not a folder: camcli train takes a folder with one "
                           "sub-folder per class")
    images: dict[str, list[InputItem]] = defaultdict(list)
    outside = []
    for item in discover([tree], patterns, storage=storage):
        folder, _, rest = item.relative.partition("/")
        if rest:
            images[folder].append(item)
        else:
            outside.append(item)
    classes = sorted(images)
    if len(classes) < 2:
        raise UsageProblem(f"{tree} has {len(classes)} class folder(s) with images: training "
                           "needs at least two (one sub-folder per class)")
    _require_two({name: len(images[name]) for name in classes}, "images")
    return classes, images, outside


def split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A seeded, stratified split: per class, ``round(n * fraction)`` images (at least one,
    at most n - 1, when ``fraction`` > 0) go to validation. Returns (train, validation)
    index arrays."""
    rng = np.random.default_rng(seed)
    train, validation = [], []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        held = 0 if fraction <= 0 else min(len(members) - 1, max(1, round(len(members) *
                                                                           fraction)))
        validation.extend(members[:held])
        train.extend(members[held:])
    return np.sort(np.array(train, int)), np.sort(np.array(validation, int))


def train(tree: str, model: ModelRequest, options: TrainOptions, reporter=None,
          layers: tuple[str, ...] = (), command: str = "", storage: Storage | None = None
          ) -> TrainReport:
    """Train a head for the classes of ``tree`` on ``model``'s frozen features and write
    ``options.output`` (and its ``.json`` report) atomically, on local disk or in a store
    (``s3://...``: the model is saved to a local temporary file for Keras, then uploaded
    whole). ``command`` is recorded in the report (the command line that made the model).

    Raises:
        UsageProblem: a bad tree, an existing ``output`` without ``overwrite``, an ``output``
            that is not ``.keras``.
    """
    from camcli.run.batch import Reporter
    from camcli.run.session import open_session

    started = time.perf_counter()
    storage = resolved(storage)
    reporter = reporter or Reporter()
    if not options.output.endswith(".keras"):
        raise UsageProblem("{output} must end with .keras (one self-contained Keras file)",
                           ("output",))
    if storage.store(options.output).exists(options.output) and not options.overwrite:
        raise UsageProblem(f"{options.output} exists: pass {{overwrite}} to replace it",
                           ("overwrite",))
    classes, images, outside = classes_of(tree, options.patterns, storage)
    for item in outside:
        log.warning("%s: not in a class folder; skipped", item.path)
    items = [item for name in classes for item in images[name]]
    labels = np.array([classes.index(item.relative.partition("/")[0]) for item in items])
    training, validation = split(labels, options.val_split, options.seed)
    session = open_session(model, ExplainRequest(method=None, layers=layers), storage=storage)
    report = TrainReport(model=options.output, classes=classes,
                         counts={name: {"train": 0, "validation": 0} for name in classes},
                         backbone=session.loaded.name, target_layer=session.explainer.layer,
                         command=command, seed=options.seed,
                         augment=options.augment,
                         skipped=[{"input": i.path, "reason": "not in a class folder"}
                                  for i in outside])
    features, flipped = _features(session, items, set(training), options, report, reporter)
    kept = np.array([i for i in range(len(items)) if i in features])
    counts = Counter(labels[kept].tolist())
    _require_two({name: counts.get(number, 0) for number, name in enumerate(classes)},
                 "readable images")
    training = np.intersect1d(training, kept)
    validation = np.intersect1d(validation, kept)
    for subset, name in ((training, "train"), (validation, "validation")):
        for index in subset:
            report.counts[classes[labels[index]]][name] += 1
    head, report.epochs = _fit(features, flipped, labels, training, validation, len(classes),
                               options)
    if len(validation):
        _evaluate(head, np.stack([features[i] for i in validation]), labels[validation],
                  classes, report)
    _save(session, head, classes, options.output, storage)
    report.seconds = round(time.perf_counter() - started, 1)
    report_path = _report_path(options.output)
    storage.store(report_path).write_atomic(
        report_path, (json.dumps(report.to_json(), indent=2, ensure_ascii=False) + "\n")
        .encode("utf-8"))
    return report


def _report_path(out: str) -> str:
    return os.path.splitext(out)[0] + ".json"


def _features(session, items, training: set, options: TrainOptions, report, reporter):
    """Pooled target-layer features of every decodable image (and of the training
    images flipped, with ``augment``), in one pass of the backbone per batch."""
    import keras

    from camcli.compute.models.preprocess import preprocess
    from camcli.run.pipeline import decoded_batches

    explainer = session.explainer
    graph = explainer.graph
    pooled = keras.Model(graph.model.input,
                         keras.layers.GlobalAveragePooling2D()(graph.model.outputs[0]))
    position = {id(item): number for number, item in enumerate(items)}
    features, flipped = {}, {}
    reporter.start(len(items))
    try:
        for batch in decoded_batches(items, explainer.input_size, options.batch_size,
                                     options.workers, session.storage):
            good = [(position[id(item)], resized) for item, _, resized in batch
                    if resized is not None]
            for item, reason, resized in batch:
                if resized is None:
                    report.skipped.append({"input": item.path, "reason": reason})
                reporter.advance(item.path, None if resized is not None else reason)
            if not good:
                continue
            resized = np.stack([r for _, r in good])
            flips = [n for n, (number, _) in enumerate(good)
                     if options.augment and number in training]
            inputs = resized if not flips else np.concatenate([resized,
                                                               resized[flips, :, ::-1]])
            with explainer.on_device():
                vectors = pooled(preprocess(explainer.preprocess, inputs),
                                 training=False).numpy().astype(np.float32)
            for row, (number, _) in enumerate(good):
                features[number] = vectors[row]
            for row, n in enumerate(flips):
                flipped[good[n][0]] = vectors[len(good) + row]
    finally:
        reporter.close()
    return features, flipped


def _require_two(counts: dict[str, int], what: str) -> None:
    """Refuse classes with fewer than two ``what`` (a split needs one to train on and one
    to hold out)."""
    few = [f"{name} ({count})" for name, count in counts.items() if count < 2]
    if few:
        raise UsageProblem(f"every class needs at least two {what}; these have fewer: "
                           f"{', '.join(few)}")


def _fit(features, flipped, labels, training, validation, count, options: TrainOptions):
    import keras

    x = np.stack([features[i] for i in training] + [flipped[i] for i in training
                                                     if i in flipped])
    y = np.concatenate([labels[training], [labels[i] for i in training if i in flipped]])
    keras.utils.set_random_seed(options.seed)
    head = keras.Sequential([keras.Input((x.shape[1],)),
                             keras.layers.Dense(count, activation="softmax",
                                                name="camcli_classes")])
    head.compile(optimizer=keras.optimizers.Adam(options.learning_rate),
                 loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    callbacks, validation_data = [], None
    if len(validation):
        validation_data = (np.stack([features[i] for i in validation]), labels[validation])
        steps = -(-len(x) // HEAD_BATCH)  # optimizer steps an epoch
        callbacks.append(keras.callbacks.EarlyStopping(
            monitor="val_loss", patience=options.patience, restore_best_weights=True,
            start_from_epoch=min(-(-MIN_STEPS // steps), options.epochs)))
    history = head.fit(x, y, batch_size=HEAD_BATCH, epochs=options.epochs, shuffle=True, verbose=0,
                       validation_data=validation_data, callbacks=callbacks)
    epochs = len(history.history["loss"])
    log.info("trained the head for %d epochs on %d vectors (%d classes)", epochs, len(x),
             count)
    return head, epochs


def _evaluate(head, x, y, classes: list[str], report: TrainReport) -> None:
    from camcli.compute.methods import rank_classes

    probabilities = head.predict(x, verbose=0)
    ranked = rank_classes(probabilities, min(5, len(classes)))
    report.val_top1 = round(float(np.mean(ranked[:, 0] == y)), 4)
    report.val_top5 = round(float(np.mean([t in row for t, row in zip(y, ranked,
                                                                       strict=True)])), 4)
    for number, name in enumerate(classes):
        members = y == number
        report.per_class[name] = (round(float(np.mean(ranked[members, 0] == number)), 4)
                                  if members.any() else None)
    confusion = Counter((classes[t], classes[p]) for t, p in zip(y, ranked[:, 0], strict=True)
                        if t != p)
    report.confused = [{"true": true, "predicted": predicted, "images": count}
                       for (true, predicted), count in confusion.most_common(5)]


def _save(session, head, classes: list[str], out: str, storage: Storage) -> None:
    """Backbone up to the target layer -> GAP -> the trained Dense, with camcli's metadata,
    saved to a local temporary file and put in place whole: renamed on local disk, uploaded
    to a store."""
    import keras

    from camcli.compute.models import write_metadata

    graph = session.explainer.graph
    pooled = keras.layers.GlobalAveragePooling2D(name="camcli_pool")(graph.model.outputs[0])
    dense = keras.layers.Dense(len(classes), activation="softmax", name="camcli_classes")
    model = keras.Model(graph.model.input, dense(pooled), name="camcli_trained")
    dense.set_weights(head.get_layer("camcli_classes").get_weights())
    target = graph.layers[0].rsplit("/", 1)[-1]  # the model is flat now: the layer's name
    with storage.store(out).writing(out) as temporary:  # Keras writes to a file name
        model.save(temporary)
        write_metadata(temporary, {"labels": classes, "preprocess": session.loaded.preprocess,
                                   "target_layer": target, "backbone": session.loaded.name})
