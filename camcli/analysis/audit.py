"""``camcli audit``: spectral relevance analysis (SpRAy; Lapuschkin et al., "Unmasking
Clever Hans predictors and assessing what machines really learn", Nature Communications
2019) of a finished run's saved maps: per explained class, the groups of images whose maps
agree with each other and differ from the rest — the strategies a model uses.

Per class:

1. **Preprocess** each saved map (``batch --save-maps``): resized (area) to a common
   ``grid`` x ``grid``, then made to sum to 1. All-zero maps are set apart as a cluster of
   their own (``blank``).
2. **Affinity**: a sparse k-nearest-neighbour graph of the maps (scikit-learn's
   ``NearestNeighbors``, Euclidean), symmetrised, with Gaussian weights whose width is the
   median neighbour distance.
3. **Spectrum**: the smallest eigenvalues of the graph's symmetric normalised Laplacian
   (SciPy's sparse ``eigsh``, or a dense solve for small classes).
4. **How many**: the largest gap among the first ``max_clusters`` eigenvalues (the
   eigengap; at least two clusters, `eigengap`), or ``clusters`` when given.
5. **Clusters**: k-means (scikit-learn) on the rows of the spectral embedding, normalised.
   Above `SPECTRAL_SAMPLE` maps, steps 2-5 run on a seeded sample of that many, and every
   other map joins the cluster of most of its nearest sampled maps.
6. **Description**: size, members, mean map, prototypes (the members nearest the cluster's
   centre in the embedding), the mean map's peak and its mass per image quadrant, and with
   a truth table of boxes the share of the maps' mass inside the objects' boxes; a cluster
   whose mass lies mostly outside the boxes is flagged; for the report, a 2-D picture
   (t-SNE) of the embedding (`layout`).

Memory and time grow linearly with the number of maps: the maps are read one at a time
and kept at ``grid`` x ``grid``; the spectrum's cost is bounded by the sample; the others
cost one nearest-neighbour query against the sample each.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from camcli.errors import UsageProblem
from camcli.io import locations
from camcli.io.storage import Storage, resolved
from camcli.io.tables import Table, read_table
from camcli.options import AuditOptions
from camcli.records.manifest import latest, parts, read_map

#: The audit's file in the run's folder, which ``camcli report`` shows when it is there.
AUDIT_FILE = "audit.json"
#: Neighbours per map in the affinity graph.
NEIGHBOURS = 10
#: Below this many maps the Laplacian's eigenvalues are found densely.
DENSE_LIMIT = 2000
#: Prototypes shown per cluster.
PROTOTYPES = 4
#: Above this many maps in a class, the spectrum is computed on a seeded sample of this many
#: and the other maps join their nearest sampled maps' cluster (`clusters_of`).
SPECTRAL_SAMPLE = 5000
#: Maps per class drawn in the report's 2-D picture of the embedding (t-SNE).
LAYOUT_POINTS = 1000
#: t-SNE's iterations for that picture (250 of them are its early exaggeration).
LAYOUT_ITERATIONS = 500
#: A cluster is flagged when less than this share of its maps' mass is inside the boxes.
OUTSIDE_FLAG = 0.5


@dataclass
class Cluster:
    """One strategy: a group of maps that agree."""

    id: int
    size: int
    members: list[str]
    prototypes: list[str]
    mean_map: np.ndarray
    peak: list[float] | None  # [x, y] as fractions of width and height; None: all zero
    quadrants: dict[str, float]  # mass of the mean map per quadrant
    mass_in_boxes: float | None = None
    blank: bool = False
    flagged: bool = False
    layout: np.ndarray | None = None  # (m, 2) in [0, 1]: drawn members in the 2-D picture

    def to_json(self) -> dict:
        top = float(self.mean_map.max())
        return {"id": self.id, "size": self.size, "members": self.members,
                "prototypes": self.prototypes,
                "peak": None if self.peak is None else [round(v, 4) for v in self.peak],
                "quadrants": {k: round(v, 4) for k, v in self.quadrants.items()},
                "mass_in_boxes": None if self.mass_in_boxes is None
                else round(self.mass_in_boxes, 4),
                "blank": self.blank, "flagged": self.flagged,
                # the picture: the mean map scaled to its maximum; the 2-D layout
                "mean_map": np.round(self.mean_map / (top or 1.0), 3).tolist(),
                "layout": [] if self.layout is None else np.round(self.layout, 4).tolist()}


@dataclass
class ClassAudit:
    """The audit of one class."""

    label: str
    images: int
    eigenvalues: list[float] = field(default_factory=list)
    clusters: list[Cluster] = field(default_factory=list)
    skipped: str | None = None  # why the class was not audited

    def to_json(self) -> dict:
        return {"class": self.label, "images": self.images,
                "eigenvalues": [round(float(v), 6) for v in self.eigenvalues],
                # clusters of non-blank maps, where a spectrum chose them (or --clusters)
                "chosen": sum(not c.blank for c in self.clusters) if self.eigenvalues
                else None,
                "clusters": [c.to_json() for c in self.clusters], "skipped": self.skipped}


def prepared(heatmap: np.ndarray, grid: int) -> np.ndarray:
    """A map resized (area) to ``grid`` x ``grid``, negatives dropped, summing to 1 (all
    zeros stays all zeros)."""
    import cv2

    small = cv2.resize(np.maximum(heatmap.astype(np.float32), 0), (grid, grid),
                       interpolation=cv2.INTER_AREA)
    total = float(small.sum())
    return small / total if total > 0 else small


def spectrum(maps: np.ndarray, count: int, neighbours: int = NEIGHBOURS
             ) -> tuple[np.ndarray, np.ndarray]:
    """The ``count`` smallest eigenvalues of the maps' kNN graph's symmetric normalised
    Laplacian, ascending, and their eigenvectors ``(n, count)``."""
    from scipy import sparse
    from scipy.sparse.linalg import eigsh
    from sklearn.neighbors import NearestNeighbors

    n = len(maps)
    k = min(neighbours, n - 1)
    distances, indices = NearestNeighbors(n_neighbors=k + 1).fit(maps).kneighbors(maps)
    distances, indices = distances[:, 1:], indices[:, 1:]  # each map is its own nearest
    width = float(np.median(distances)) or 1.0
    weights = np.exp(-(distances / width) ** 2)
    graph = sparse.csr_matrix((weights.ravel(), (np.repeat(np.arange(n), k),
                                                 indices.ravel())), shape=(n, n))
    graph = graph.maximum(graph.T)  # symmetric: an edge if either is the other's neighbour
    degree = np.asarray(graph.sum(axis=1)).ravel()
    scale = sparse.diags(1.0 / np.sqrt(np.maximum(degree, 1e-12)))
    laplacian = sparse.identity(n) - scale @ graph @ scale
    count = min(count, n - 1) if n > 1 else 1
    if n <= DENSE_LIMIT:
        values, vectors = np.linalg.eigh(laplacian.toarray())
        return values[:count], vectors[:, :count]
    values, vectors = eigsh(laplacian.tocsc(), k=count, sigma=-1e-3, which="LM")
    order = np.argsort(values)
    return values[order], vectors[:, order]


#: Gaps within this share of the largest count as ties, won by the fewer clusters.
GAP_TIE = 0.9


def eigengap(values: np.ndarray) -> int:
    """How many clusters the spectrum says: the k >= 2 where the gap between eigenvalues k
    and k+1 is largest. Noise inside the groups makes gaps further up the spectrum about
    as wide as the true one: a gap within `GAP_TIE` of the largest is a tie, and the
    smaller k wins. The first gap (one cluster) is left out: a class whose maps form
    one tight group and a diffuse rest — a shortcut taken on most images, the Clever-Hans
    case — has its largest gap there, and one cluster would hide the shortcut; a class with
    a single strategy comes out as clusters with the same peak (`bench/audit.py` measures
    both rules)."""
    if len(values) < 3:
        return len(values) - 1 if len(values) == 2 else 1
    gaps = np.diff(values)[1:]
    return int(np.flatnonzero(gaps >= GAP_TIE * gaps.max())[0]) + 2


class Spectral(NamedTuple):
    """What `clusters_of` found: a cluster per map (``(n,)``); the spectrum; the maps the
    spectrum was computed on (``rows``: all of them, or a sample of `SPECTRAL_SAMPLE`);
    their row-normalised embedding k-means ran on (``(m, clusters)``) and their
    eigenvectors (``(m, count)``)."""

    labels: np.ndarray
    eigenvalues: np.ndarray
    embedding: np.ndarray
    vectors: np.ndarray
    rows: np.ndarray


def clusters_of(maps: np.ndarray, count: int | None, max_clusters: int,
                seed: int = 0) -> Spectral:
    """``count`` clusters of the maps, or as many as the eigengap says.

    Above `SPECTRAL_SAMPLE` maps the spectrum and k-means run on a seeded sample of that
    many, and every other map joins the cluster most of its `NEIGHBOURS` nearest sampled
    maps are in: the cost grows linearly with the maps past the sample."""
    from sklearn.cluster import KMeans

    rows = np.arange(len(maps)) if len(maps) <= SPECTRAL_SAMPLE else np.sort(
        np.random.default_rng(seed).choice(len(maps), SPECTRAL_SAMPLE, replace=False))
    sample = maps[rows]
    values, vectors = spectrum(sample, max(max_clusters, count or 0) + 1)
    chosen = count or eigengap(values[:max_clusters + 1])
    chosen = max(1, min(chosen, len(sample)))
    embedding = _rows_normalised(vectors[:, :chosen])
    if chosen == 1:
        return Spectral(np.zeros(len(maps), int), values, embedding, vectors, rows)
    sampled = KMeans(n_clusters=chosen, n_init=10, random_state=seed).fit_predict(embedding)
    if len(rows) == len(maps):
        return Spectral(sampled, values, embedding, vectors, rows)
    return Spectral(_extended(maps, sample, sampled, rows, chosen), values, embedding,
                    vectors, rows)


def _extended(maps: np.ndarray, sample: np.ndarray, sampled: np.ndarray, rows: np.ndarray,
              clusters: int) -> np.ndarray:
    """Every map's cluster: the sampled maps keep theirs; the others take the one most of
    their nearest sampled maps are in (ties: the nearer neighbours' weight decides)."""
    from sklearn.neighbors import NearestNeighbors

    labels = np.empty(len(maps), int)
    labels[rows] = sampled
    rest = np.setdiff1d(np.arange(len(maps)), rows)
    finder = NearestNeighbors(n_neighbors=NEIGHBOURS).fit(sample)
    for start in range(0, len(rest), 10_000):  # bounded memory: 10,000 x sample distances
        chunk = rest[start:start + 10_000]
        distances, indices = finder.kneighbors(maps[chunk])
        votes = np.zeros((len(chunk), clusters))
        weights = 1.0 + 1e-6 / (1.0 + distances)  # one vote each; nearer breaks a tie
        np.add.at(votes, (np.repeat(np.arange(len(chunk)), indices.shape[1]),
                          sampled[indices].ravel()), weights.ravel())
        labels[chunk] = votes.argmax(axis=1)
    return labels


def _rows_normalised(matrix: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix / np.where(norms > 0, norms, 1.0)


def layout(vectors: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A 2-D picture of the spectral embedding for the report: t-SNE (scikit-learn) of the
    eigenvectors' rows, normalised, on at most `LAYOUT_POINTS` maps (a seeded sample).
    Returns the sampled rows and their ``(m, 2)`` coordinates, scaled into [0, 1]."""
    from sklearn.manifold import TSNE

    n = len(vectors)
    rows = np.arange(n) if n <= LAYOUT_POINTS else np.sort(
        np.random.default_rng(seed).choice(n, LAYOUT_POINTS, replace=False))
    points = _rows_normalised(vectors[rows])
    if len(rows) > 4:
        points = TSNE(n_components=2, perplexity=min(30.0, (len(rows) - 1) / 3),
                      init="pca", max_iter=LAYOUT_ITERATIONS,
                      random_state=seed).fit_transform(points)
    else:
        points = np.pad(points, ((0, 0), (0, max(0, 2 - points.shape[1]))))[:, :2]
    low, high = points.min(axis=0), points.max(axis=0)
    return rows, (points - low) / np.where(high > low, high - low, 1.0)


def _peak_and_quadrants(mean: np.ndarray) -> tuple[list[float], dict[str, float]]:
    height, width = mean.shape
    y, x = np.unravel_index(int(np.argmax(mean)), mean.shape)
    total = float(mean.sum()) or 1.0
    top, left = height // 2, width // 2
    quadrants = {"top_left": mean[:top, :left].sum(), "top_right": mean[:top, left:].sum(),
                 "bottom_left": mean[top:, :left].sum(),
                 "bottom_right": mean[top:, left:].sum()}
    return ([(x + 0.5) / width, (y + 0.5) / height],
            {k: float(v) / total for k, v in quadrants.items()})


@dataclass
class Audited:
    """What `run` did: the document it wrote (``out_dir/audit.json``), and the report it
    (re)wrote."""

    document: dict
    report: str | None = None


def run(out_dir: str, options: AuditOptions = AuditOptions(),
        storage: Storage | None = None) -> Audited:
    """``camcli audit``: audit the run in ``out_dir``, write ``out_dir/audit.json`` and, with
    ``options.make_report``, the run's report with the audit in it.

    Raises:
        UsageProblem: see `audit`.
    """
    storage = resolved(storage)
    document = {"classes": [result.to_json() for result in audit(out_dir, options, storage)]}
    path = locations.join(out_dir, AUDIT_FILE)
    storage.store(path).write_atomic(
        path, json.dumps(document, indent=2, ensure_ascii=False).encode("utf-8"))
    made = None
    if options.make_report:
        from camcli.analysis.report import build_report

        made = build_report(out_dir, storage=storage).path
    return Audited(document, made)


def read_audit(out_dir: str, storage: Storage | None = None) -> dict | None:
    """The run's ``audit.json`` (`run`), or None when it has none."""
    path = locations.join(out_dir, AUDIT_FILE)
    store = resolved(storage).store(path)
    if not store.isfile(path):
        return None
    with store.open(path, "rb") as f:
        return json.loads(f.read().decode("utf-8"))


def audit(out_dir: str, options: AuditOptions = AuditOptions(),
          storage: Storage | None = None) -> list[ClassAudit]:
    """Audit the run in ``out_dir`` (see the module docstring), class by class.

    Raises:
        UsageProblem: no manifest, a run without saved maps, or (with ``options.truth``)
            table rows that match several inputs of the run.
    """
    storage = resolved(storage)
    _require_libraries()
    if not parts(out_dir, storage):
        raise UsageProblem(f"{out_dir} has no manifest.jsonl: run camcli batch --out "
                           f"{out_dir} --save-maps first")
    runs = latest(out_dir, storage=storage)
    truth = _Truth(options.truth, runs, storage) if options.truth else None
    by_class: dict[str, list] = defaultdict(list)
    mapped = 0
    for path, group in runs.items():
        for record in group.in_rank_order():
            if record.error is not None or record.rank not in (None, 1):
                continue
            if record.map:
                mapped += 1
                by_class[record.label or str(record.class_index)].append((path, record))
    if not mapped:
        raise UsageProblem(f"{out_dir}: the run saved no maps; run camcli batch again with "
                           "--save-maps (the audit reads the maps, not the overlays)")
    results = []
    for label in options.classes or sorted(by_class):
        members = by_class.get(label, [])
        result = ClassAudit(label, len(members))
        results.append(result)
        if len(members) < options.min_images:
            result.skipped = f"{len(members)} maps, fewer than --min-images {options.min_images}"
            continue
        maps, photos, inside = [], [], []
        for path, record in members:  # one map at a time, kept at grid x grid
            heatmap = read_map(record, out_dir, storage)
            maps.append(prepared(heatmap, options.grid))
            photos.append(path)
            inside.append(_mass_inside(heatmap, truth.boxes(path), path, storage)
                          if truth else None)
        _cluster_class(result, np.stack(maps), photos, inside, options)
    return results


def _cluster_class(result: ClassAudit, stack: np.ndarray, photos: list[str], inside: list,
                   options: AuditOptions) -> None:
    """``result``'s spectrum and clusters, from its prepared maps ``stack``: the clusters
    of the maps that are not all zero, then the all-zero ones as a cluster of their own;
    largest first."""
    flat = stack.reshape(len(stack), -1)
    blank = flat.sum(axis=1) == 0
    found: list[Cluster] = []
    live = np.flatnonzero(~blank)
    if len(live) >= 2:
        labels, values, embedding, vectors, spectral = clusters_of(
            flat[live], options.clusters, options.max_clusters)
        result.eigenvalues = list(values[:options.max_clusters + 1])
        drawn, points = layout(vectors)
        for number in range(labels.max() + 1):
            here = labels[spectral] == number  # the cluster's maps in the spectrum
            centre = embedding[here].mean(axis=0)
            nearest = np.argsort(np.linalg.norm(embedding[here] - centre, axis=1))[:PROTOTYPES]
            cluster = _describe(len(found), live[labels == number], stack, photos, inside,
                                [photos[live[spectral[here][i]]] for i in nearest])
            cluster.layout = points[labels[spectral[drawn]] == number]
            found.append(cluster)
    elif len(live) == 1:
        found.append(_describe(0, live, stack, photos, inside, [photos[live[0]]]))
    if blank.any():
        rows = np.flatnonzero(blank)
        cluster = _describe(len(found), rows, stack, photos, inside,
                            [photos[i] for i in rows[:PROTOTYPES]])
        cluster.blank = True
        found.append(cluster)
    result.clusters = sorted(found, key=lambda c: (c.blank, -c.size))
    for number, cluster in enumerate(result.clusters):
        cluster.id = number


def _require_libraries() -> None:
    """scikit-learn and SciPy, or say how to install them.

    Raises:
        UsageProblem: either is missing.
    """
    try:
        import scipy.sparse  # noqa: F401
        import sklearn.neighbors  # noqa: F401
    except ImportError as missing:
        raise UsageProblem(f"camcli audit needs scikit-learn and SciPy ({missing.name} is not "
                           "installed): pip install 'camcli[audit]'") from None


def _describe(number: int, rows: np.ndarray, stack: np.ndarray, photos: list[str],
              inside: list, prototypes: list[str]) -> Cluster:
    mean = stack[rows].mean(axis=0)
    peak, quadrants = _peak_and_quadrants(mean)
    if not mean.any():
        peak = None
    shares = [inside[i] for i in rows if inside[i] is not None]
    mass = float(np.mean(shares)) if shares else None
    return Cluster(number, len(rows), [photos[i] for i in rows], prototypes, mean, peak,
                   quadrants, mass, flagged=mass is not None and mass < OUTSIDE_FLAG)


class _Truth:
    """The truth table's boxes of each input of the run, found as ``score`` finds them: by
    the input's trailing path parts (`camcli.io.tables.Table`), every input claiming its
    row first, so a row name that several inputs share is refused, not guessed.

    Raises:
        UsageProblem: the table cannot be read, or some row names match several inputs.
    """

    def __init__(self, path: str, runs: dict, storage: Storage):
        self.table = Table(read_table(path, storage), path)
        self.keys = {input_path: self.table.claim(input_path) for input_path in runs}
        self.table.refuse_ambiguous()

    def boxes(self, input_path: str) -> list:
        key = self.keys.get(input_path)
        return [] if key is None else [row.box for row in self.table.rows[key] if row.box]


def _mass_inside(heatmap: np.ndarray, boxes: list, photo: str, storage: Storage
                 ) -> float | None:
    """The share of the map's mass inside the boxes: the map upsampled to the photo's size
    (read from its header), as the overlays draw it."""
    if not boxes:
        return None
    from camcli.analysis.localise import upsample
    from camcli.io.images import photo_size

    try:
        width, height = photo_size(photo, storage)
    except OSError:
        return None
    upsampled = np.maximum(upsample(heatmap, width, height), 0)
    total = float(upsampled.sum())
    if total <= 0:
        return None
    inside = np.zeros(upsampled.shape, bool)
    for x0, y0, x1, y1 in boxes:
        inside[max(int(y0), 0):int(np.ceil(y1)), max(int(x0), 0):int(np.ceil(x1))] = True
    return float(upsampled[inside].sum()) / total


#: The columns of the audit's table (`rows`), for people: printed, and in the report.
COLUMNS = ("class", "cluster", "size", "peak (x, y)", "in boxes", "note")


def rows(classes: list[dict]) -> Iterator[tuple[str, ...]]:
    """The audit's table, row by row (`COLUMNS`), from ``audit.json``'s classes: a row per
    cluster, one per skipped class."""
    for entry in classes:
        if entry["skipped"]:
            yield (entry["class"], "-", str(entry["images"]), "", "",
                   f"skipped: {entry['skipped']}")
            continue
        for cluster in entry["clusters"]:
            peak = "" if cluster["peak"] is None else \
                "({:.2f}, {:.2f})".format(*cluster["peak"])
            share = cluster["mass_in_boxes"]
            note = "all-zero maps" if cluster["blank"] else (
                "FLAGGED: attention outside the objects" if cluster["flagged"] else "")
            yield (entry["class"], str(cluster["id"]), str(cluster["size"]), peak,
                   "n/a" if share is None else f"{share:.0%}", note)


def table(classes: list[dict]) -> str:
    """The audit for people (`rows`, aligned), from ``audit.json``'s classes."""
    def line(label, cluster, size, peak, inside, note) -> str:
        return f"{label[:24]:<24} {cluster:>7} {size:>6} {peak:>13} {inside:>9}  {note}".rstrip()

    return "\n".join(line(*row) for row in (COLUMNS, *rows(classes)))
