"""``camcli score``: does the model look at the right thing? A run's records against ground
truth.

The truth is a table (`camcli.io.tables.read_table`: CSV, JSON lines or COCO) of ``input,
class[, x0, y0, x1, y1]`` rows, several per input allowed. For every input of the run and
every class its rows name (a *truth pair*):

* **classification**: top-1 / top-5 — the class is the record's first / among its five
  first ``top`` entries;
* **pointing game** (Zhang et al., "Top-down Neural Attention by Excitation Backprop",
  ECCV 2016): when the run explained that class for the input, a hit if the map's peak
  lies within 15 pixels of one of the class's true boxes in the image;
* **localisation** (Zhou et al., CAM, CVPR 2016): when the record has a box (``batch
  --boxes``), a hit if its IoU with one of the class's true boxes is at least 0.5; the
  mean IoU is the mean of each pair's best IoU.

* **MaxBoxAccV2** (Choe et al., "Evaluating Weakly Supervised Object Localization Methods
  Right", CVPR 2020): from the saved map (``batch --save-maps``) upsampled to the photo,
  for every threshold t = 0, 0.01, ..., 1 (of the map's maximum) the boxes of all the
  8-connected regions at or above it; a hit at IoU d when one of them reaches IoU d with
  one of the class's true boxes. Box accuracy at (t, d) is the fraction of hits; MaxBoxAccV2
  is the mean over d = 0.3, 0.5, 0.7 of the best accuracy over t. The **calibrated
  threshold** is the t of the best accuracy at IoU 0.5 (the lowest on a tie), ready for
  ``--box-threshold``.

With ``box_threshold``, localisation uses boxes derived again from the saved maps at that
threshold (`camcli.analysis.localise.box`) instead of the records' boxes: no model runs.

Rates are over the truth pairs that can be scored: pointing and localisation need a map of
the true class (``--class-from`` explains it; a top-1 run only when the model's guess was
right) and true boxes. Overall figures pool all pairs (micro-average).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from camcli.analysis import localise
from camcli.errors import UsageProblem
from camcli.io import labels as labels_mod
from camcli.io import locations
from camcli.io.storage import Storage, resolved
from camcli.io.tables import Table, read_table
from camcli.options import ScoreOptions
from camcli.records.manifest import Record, latest, parts, read_map

#: The pointing game's tolerance, in pixels (Zhang et al. 2016).
POINTING_TOLERANCE = 15
#: Localisation counts a box whose IoU with a true box reaches this (Zhou et al. 2016).
LOCALISATION_IOU = 0.5
#: MaxBoxAccV2's thresholds (of the map's maximum) and IoUs (Choe et al. 2020).
BOX_THRESHOLDS = np.round(np.arange(101) / 100, 2)
BOX_IOUS = (0.3, 0.5, 0.7)


@dataclass
class Tally:
    """Counts for one class, or for all."""

    pairs: int = 0
    top1: int = 0
    top5: int = 0
    pointed: int = 0
    pointing_hits: int = 0
    boxed: int = 0
    localised: int = 0
    iou_sum: float = 0.0
    mapped: int = 0
    #: hits per (threshold, IoU) of `BOX_THRESHOLDS` x `BOX_IOUS`, over the mapped pairs
    box_hits: np.ndarray = field(
        default_factory=lambda: np.zeros((len(BOX_THRESHOLDS), len(BOX_IOUS)), np.int64))

    def add(self, other: Tally) -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def rates(self) -> dict:
        """The figures: fractions in [0, 1], None where nothing could be scored."""
        def ratio(hits, total):
            return hits / total if total else None

        accuracy = self.box_hits / self.mapped if self.mapped else None
        best = None if accuracy is None else accuracy.max(axis=0)
        return {"pairs": self.pairs, "top1": ratio(self.top1, self.pairs),
                "top5": ratio(self.top5, self.pairs),
                "pointing": ratio(self.pointing_hits, self.pointed), "pointed": self.pointed,
                "localisation": ratio(self.localised, self.boxed), "boxed": self.boxed,
                "mean_iou": ratio(self.iou_sum, self.boxed),
                "mapped": self.mapped,
                "max_box_acc_v2": None if best is None else float(best.mean()),
                "max_box_acc": None if best is None else {
                    f"{d:g}": float(b) for d, b in zip(BOX_IOUS, best, strict=True)},
                "calibrated_threshold": None if accuracy is None else float(
                    BOX_THRESHOLDS[int(np.argmax(accuracy[:, BOX_IOUS.index(0.5)]))])}


@dataclass
class Scores:
    """What `score` found: per class (by its label) and overall."""

    classes: dict[str, Tally] = field(default_factory=dict)
    overall: Tally = field(default_factory=Tally)
    inputs: int = 0
    without_truth: int = 0
    unresolved: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return {"overall": self.overall.rates(),
                "classes": {name: tally.rates() for name, tally in sorted(self.classes.items())},
                "inputs": self.inputs, "inputs_without_truth": self.without_truth,
                "unresolved_classes": self.unresolved}


def score(manifests: list[str], options: ScoreOptions, storage: Storage | None = None
          ) -> Scores:
    """Score the runs recorded in ``manifests`` (manifest files or output folders) against
    the table ``options.truth``; with ``options.box_threshold``, localise with boxes derived
    again from the saved maps at that threshold.

    Raises:
        UsageProblem: no manifest, an unreadable table, table rows that match several
            inputs, ``box_threshold`` for a run without saved maps, or ``min_loc`` for a
            run with nothing to localise.
    """
    storage = resolved(storage)
    truth, box_threshold = options.truth, options.box_threshold
    records, folders = _records(manifests, storage)
    if box_threshold is not None and not any(r.map for g in records.values() for r in g):
        raise UsageProblem("{box_threshold} derives the boxes from the saved maps, and the "
                           "run saved none: run batch with --save-maps", ("box_threshold",))
    table = Table(read_table(truth, storage), truth)
    labels = _labels(records, options.labels_file, storage)
    resolve = labels_mod.Resolver(labels, max(len(labels), 1))
    scores = Scores()
    for path, group in records.items():
        scores.inputs += 1
        key = table.claim(path)
        if key is None:
            scores.without_truth += 1
            continue
        truth_boxes: dict[str, list] = defaultdict(list)
        for row in table.rows[key]:
            if row.label is not None:
                truth_boxes[row.label].extend([row.box] if row.box else [])
        for name, boxes in truth_boxes.items():
            index = resolve(name)
            label = labels.name(index) if index is not None else name
            tally = scores.classes.setdefault(label, Tally())
            tally.add(_pair(group, index, boxes, folders[path], box_threshold, storage))
    table.refuse_ambiguous()
    for tally in scores.classes.values():
        scores.overall.add(tally)
    scores.unresolved = resolve.unresolved
    if options.min_loc is not None and scores.overall.rates()["localisation"] is None:
        raise UsageProblem("{min_loc}: nothing to localise (no boxes in the run, or no true "
                           "boxes of the classes it explained)", ("min_loc",))
    return scores


def gates(scores: Scores, options: ScoreOptions) -> list[str]:
    """The CI gates ``scores`` fail (``min_pointing``, ``min_loc``), each said in a few
    words; empty when all pass."""
    overall = scores.overall.rates()
    failed = []
    for name, floor, value in (("pointing game", options.min_pointing, overall["pointing"]),
                               ("localisation accuracy", options.min_loc,
                                overall["localisation"])):
        if floor is not None and (value is None or value < floor):
            shown = "n/a" if value is None else f"{value:.3f}"
            failed.append(f"{name} {shown} is below {floor:g}")
    return failed


def _pair(group: list[Record], index: int | None, boxes: list, folder: str,
          box_threshold: float | None, storage: Storage) -> Tally:
    """The tally of one truth pair: an input, and one class of its truth (``folder``: its
    manifest's, where the saved map is)."""
    tally = Tally(pairs=1)
    first = group[0]
    top = [entry[0] for entry in first.top]
    tally.top1 = int(bool(top) and top[0] == index)
    tally.top5 = int(index in top[:5])
    explained = [r for r in group if r.class_index == index and index is not None]
    if explained and boxes:
        record = explained[0]
        tally.pointed = 1
        if record.peak is not None:
            tally.pointing_hits = pointing_hit(record.peak, boxes)
        upsampled = _saved_map(record, folder, storage)
        found = record.box
        if upsampled is not None:
            tally.mapped, tally.box_hits = 1, box_hits(upsampled, boxes)
            if box_threshold is not None:
                found = localise.box(upsampled, box_threshold)
        elif box_threshold is not None:
            found = None  # no map to derive the box from: not localised
        if found is not None:
            best = max(localise.iou(found, box) for box in boxes)
            tally.boxed, tally.iou_sum = 1, best
            tally.localised = int(best >= LOCALISATION_IOU)
    return tally


def pointing_hit(peak: list[int], boxes: list) -> int:
    """1 when the map's ``peak`` lies within `POINTING_TOLERANCE` pixels of a box."""
    nearest = min(localise.distance_to_box(peak, box) for box in boxes)
    return int(nearest <= POINTING_TOLERANCE)


def localised(upsampled: np.ndarray, boxes: list) -> Tally:
    """The pointing game and the box hits of one map at its photo's size against the true
    ``boxes`` of its class (``camcli evaluate``'s localisation; `_pair`'s rules)."""
    tally = Tally(pointed=1, mapped=1, box_hits=box_hits(upsampled, boxes))
    peak = localise.peak(upsampled)
    tally.pointing_hits = 0 if peak is None else pointing_hit(peak, boxes)
    return tally


def box_hits(upsampled: np.ndarray, truth: list) -> np.ndarray:
    """``(thresholds, IoUs)`` 0/1: whether, at each of `BOX_THRESHOLDS` (of the map's
    maximum), the box of one of the map's 8-connected regions reaches each of `BOX_IOUS`
    with one of the ``truth`` boxes."""
    hits = np.zeros((len(BOX_THRESHOLDS), len(BOX_IOUS)), np.int64)
    for row, threshold in enumerate(BOX_THRESHOLDS):
        best = max((localise.iou(found, box) for _, found in
                    localise.regions(upsampled, threshold) for box in truth), default=0.0)
        hits[row] = [best >= iou for iou in BOX_IOUS]
    return hits


def _saved_map(record: Record, folder: str, storage: Storage) -> np.ndarray | None:
    """The record's saved map (``--save-maps``) upsampled to its photo's size, or None
    without one (or when the map or the photo can no longer be read)."""
    if not record.map:
        return None
    from camcli.io.images import photo_size

    try:
        heatmap = read_map(record, folder, storage)
        width, height = photo_size(record.input, storage)
    except (OSError, ValueError):
        return None
    return localise.upsample(heatmap, width, height)


def _records(manifests: list[str], storage: Storage
             ) -> tuple[dict[str, list[Record]], dict[str, str]]:
    """Every input's latest records (errors left out), over the given manifests, and the
    folder of each input's manifest."""
    found: dict[str, list[Record]] = {}
    folders: dict[str, str] = {}
    for given in manifests:
        store = storage.store(given)
        if store.isdir(given):
            folder, names = given, None
            if not parts(folder, storage):
                raise UsageProblem(f"{given} has no manifest.jsonl: run camcli batch first")
        elif store.isfile(given):
            folder, names = locations.dirname(given) or ".", {locations.absolute(given)}
        else:
            raise UsageProblem(f"{given}: no such manifest or folder")
        for path, group in latest(folder, files=names, storage=storage).items():
            good = [record for record in group.in_rank_order() if record.error is None]
            if good:
                found[path], folders[path] = good, folder
    return found, folders


def _labels(records: dict[str, list[Record]], labels_file: str | None, storage: Storage):
    """The model's class names: the file given, ImageNet's when every name the records show
    is ImageNet's, else the names the records show."""
    if labels_file:
        return labels_mod.from_file(labels_file, storage)
    seen: dict[int, str] = {}
    for group in records.values():
        for record in group:
            for index, label, _ in record.top:
                seen[index] = label
            if record.class_index is not None:
                seen[record.class_index] = record.label
    imagenet = labels_mod.imagenet()
    if seen and max(seen) < len(imagenet) and all(imagenet.name(i) == n for i, n in seen.items()):
        return imagenet
    size = max(seen) + 1 if seen else 0
    return labels_mod.Labels(names=tuple(seen.get(i, f"class_{i}") for i in range(size)))


def table(scores: Scores) -> str:
    """The scores for people: a row per class, then all."""
    lines = [f"{'class':<28} {'pairs':>6} {'top-1':>7} {'top-5':>7} {'pointing':>9} "
             f"{'loc. acc':>9} {'mean IoU':>9} {'MaxBoxAccV2':>12}"]

    def row(name: str, tally: Tally) -> str:
        rates = tally.rates()

        def percent(value):
            return "n/a" if value is None else f"{value:.1%}"

        iou = "n/a" if rates["mean_iou"] is None else f"{rates['mean_iou']:.3f}"
        return (f"{name[:28]:<28} {rates['pairs']:>6} {percent(rates['top1']):>7} "
                f"{percent(rates['top5']):>7} {percent(rates['pointing']):>9} "
                f"{percent(rates['localisation']):>9} {iou:>9} "
                f"{percent(rates['max_box_acc_v2']):>12}")

    for name, tally in sorted(scores.classes.items()):
        lines.append(row(name, tally))
    lines.append(row("all", scores.overall))
    overall = scores.overall.rates()
    if overall["mapped"]:
        accuracy = overall["max_box_acc"]
        lines.append(f"\ncalibrated --box-threshold {overall['calibrated_threshold']:.2f}: box "
                     f"accuracy {accuracy['0.5']:.1%} at IoU 0.5 over {overall['mapped']} saved "
                     f"maps (best over thresholds at IoU 0.3 / 0.5 / 0.7: {accuracy['0.3']:.1%} "
                     f"/ {accuracy['0.5']:.1%} / {accuracy['0.7']:.1%})")
    return "\n".join(lines)
