"""The manifest: one JSON record per explained picture (or failed input), one writer, one reader.

``OUT/manifest.jsonl`` (``manifest.K-of-N.jsonl`` for a shard) holds one JSON object per
line. A `Record` states the request it answers (model, layer, method, target, class asked
for) and the input it concerns; readers key on those, never on the results. Paths of the
pictures are relative to the manifest's own folder, so an output folder can be moved or
copied; the input is an absolute path.

Records are appended, never rewritten. The records of one input from one run (one per map
with ``--top-k-maps``) form a *group*, appended in one write so a killed run leaves all of
them or none. For each input, readers take the latest group: within a file the later line,
across files (shards) the later ``time``. A group for another request (method, class,
model, layer) *supersedes* the earlier one: the last one counts.

Schema 2 (this module). Schema 1, written by camcli 0.x before ``schema`` existed, is still
read: its paths were relative to the folder the run started in (they are resolved against
the current folder, then looked up under the manifest's folder), and its request is
inferred as that release did (``top1`` when the explained class is the top class).
"""

from __future__ import annotations

import glob
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from camcli.errors import OutputError
from camcli.io import locations
from camcli.io.storage import Storage, resolved
from camcli.options import CLASS_SOURCES
from camcli.options import TARGET_KINDS as TARGETS

SCHEMA = 2
MANIFEST_NAME = "manifest.jsonl"


@dataclass(frozen=True)
class Request:
    """What a record answers. Two records answer the same request when these are equal.

    Attributes:
        model: the built-in model's name, or the model file's absolute path.
        layer: the target layer's path.
        method: the method's name.
        target: what was asked of the input: its top class, its top K classes (``rank``
            1..K), a class (``requested_class``), or both of the last two (the asked
            class's record has no rank); one of `camcli.options.TARGET_KINDS`.
        requested_class: the class asked for (targets with ``class``), else None.
        class_source: where the asked class came from (`CLASS_SOURCES`), else None.
        fuse: with several layers (``layer`` is then their paths), how their maps were
            fused (``mean`` or ``max``); else None.
        tokens: for a token layer, how its tokens made the map, ``"P+HxW"`` (P prefix
            tokens dropped, then an H x W grid); with several layers, one per layer (None
            for a map); None when no layer is a token layer.
        settings: the method's settings that change its maps and differ from their
            defaults, ``"name=value"`` joined by commas in a fixed order (``smooth=aug``,
            ``finer_alpha=0.5``, ``max_maps=64``); None when all are the defaults.
    """

    model: str
    layer: str | tuple[str, ...]
    method: str
    target: str
    requested_class: int | None = None
    class_source: str | None = None
    fuse: str | None = None
    tokens: str | tuple[str | None, ...] | None = None
    settings: str | None = None

    def __post_init__(self):
        if self.target not in TARGETS:
            raise ValueError(f"target must be one of {TARGETS}, got {self.target!r}")
        if self.class_source not in (None, *CLASS_SOURCES):
            raise ValueError(f"class_source must be one of {CLASS_SOURCES}, got "
                             f"{self.class_source!r}")


@dataclass
class Record:
    """One line of the manifest: one picture written, or one input that failed.

    Attributes:
        input: the input's absolute path.
        request: what was asked (see `Request`).
        rank: for target ``top-k``, the rank of the explained class (1 = most probable).
        output: the overlay, relative to the manifest's folder ('/'-separated); None on error.
        map: the ``.npy`` map, likewise, or None.
        class_index, label, score: the explained class, its name and probability.
        class_specific: whether the map depends on the class (False for a method whose
            map is the same whatever the class: EigenCAM, attention rollout...).
        top: ``[[index, label, probability], ...]``, most probable first.
        peak: ``[x, y]``, the map's maximum in the photo's pixels (`camcli.analysis.localise`).
        box: ``[x0, y0, x1, y1]``, the object's box from the map (with --boxes), or None.
        metrics: the map's faithfulness metrics, or None.
        precision: the model's compute precision.
        error: why the input failed, or None.
        time: when the record was appended (UTC, ISO 8601).
        schema: the schema the record was written in.
    """

    input: str
    request: Request
    rank: int | None = None
    output: str | None = None
    map: str | None = None
    class_index: int | None = None
    label: str | None = None
    score: float | None = None
    class_specific: bool = True
    top: list = field(default_factory=list)
    peak: list | None = None
    box: list | None = None
    metrics: dict | None = None
    precision: str | None = None
    error: str | None = None
    time: str = ""
    schema: int = SCHEMA

    def to_json(self) -> str:
        """The record as one JSON line (no newline), in the documented field order."""
        data = {
            "schema": self.schema, "input": self.input, "output": self.output, "map": self.map,
            "model": self.request.model,
            "layer": (self.request.layer if isinstance(self.request.layer, str)
                      else list(self.request.layer)),
            "fuse": self.request.fuse,
            "tokens": (self.request.tokens if not isinstance(self.request.tokens, tuple)
                       else list(self.request.tokens)),
            "method": self.request.method, "settings": self.request.settings,
            "target": self.request.target,
            "requested_class": self.request.requested_class,
            "class_source": self.request.class_source, "rank": self.rank,
            "class_index": self.class_index, "label": self.label, "score": self.score,
            "class_specific": self.class_specific,
            "top": self.top, "peak": self.peak, "box": self.box, "metrics": self.metrics,
            "precision": self.precision,
            "error": self.error, "time": self.time,
        }
        return json.dumps(data, ensure_ascii=False)

    @classmethod
    def from_json(cls, line: str, folder: str, storage: Storage | None = None
                  ) -> Record | None:
        """Parse one manifest line of the manifest in ``folder``; None for a torn or foreign
        line. Schema-1 lines are converted (see the module's docstring)."""
        try:
            data = json.loads(line)
        except ValueError:
            return None
        if not isinstance(data, dict) or not isinstance(data.get("input"), str):
            return None
        try:
            if "schema" not in data:
                return _from_schema_1(data, folder, resolved(storage))
            layer, tokens = data["layer"], data.get("tokens")
            request = Request(data["model"], layer if isinstance(layer, str) else tuple(layer),
                              data["method"], data["target"], data.get("requested_class"),
                              data.get("class_source"), data.get("fuse"),
                              tuple(tokens) if isinstance(tokens, list) else tokens,
                              data.get("settings"))
            return cls(input=data["input"], request=request, rank=data.get("rank"),
                       output=data.get("output"), map=data.get("map"),
                       class_index=data.get("class_index"), label=data.get("label"),
                       score=data.get("score"),
                       class_specific=data.get("class_specific", True) is not False,
                       top=data.get("top") or [],
                       peak=data.get("peak"), box=data.get("box"),
                       metrics=data.get("metrics"), precision=data.get("precision"),
                       error=data.get("error"), time=data.get("time") or "",
                       schema=data["schema"])
        except (KeyError, TypeError, ValueError):
            return None

    def path(self, folder: str, which: str = "output") -> str | None:
        """The absolute path of ``output`` or ``map``, for the manifest in ``folder``."""
        relative = getattr(self, which)
        if relative is None:
            return None
        return locations.join(locations.absolute(folder), *relative.split("/"))


def relative_to(path: str, folder: str) -> str:
    """``path`` relative to ``folder``, with '/' separators (how records store pictures)."""
    return locations.relative(path, folder)


def now() -> str:
    """The current UTC time as records store it (millisecond resolution)."""
    seconds = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + \
        f".{int(seconds % 1 * 1000):03d}Z"


def _from_schema_1(data: dict, folder: str, storage: Storage) -> Record:
    rank, top = data.get("rank"), data.get("top") or []
    class_index = data.get("class_index")
    if rank is not None:
        target, requested = "top-k", None
    elif data.get("error") is not None or (top and class_index == top[0][0]):
        target, requested = "top1", None
    else:
        target, requested = "class", class_index
    request = Request(data["model"], data["layer"], data["method"], target, requested,
                      "option" if requested is not None else None)
    return Record(input=locations.absolute(data["input"]), request=request, rank=rank,
                  output=_schema_1_path(data.get("output"), folder, storage),
                  map=_schema_1_path(data.get("map"), folder, storage), class_index=class_index,
                  label=data.get("label"), score=data.get("score"), top=top,
                  metrics=data.get("metrics"), error=data.get("error"), schema=1)


def _schema_1_path(path: str | None, folder: str, storage: Storage) -> str | None:
    """Schema 1 stored paths as seen from where the run started: take the path if it
    exists from here under ``folder``, else the longest tail of it that exists there."""
    if not path:
        return None
    absolute = os.path.abspath(path)
    store = storage.store(folder)
    if store.isfile(absolute) and absolute.startswith(os.path.abspath(folder) + os.sep):
        return relative_to(absolute, folder)
    parts = os.path.normpath(path).split(os.sep)
    for start in range(1, len(parts)):
        if store.isfile(os.path.join(folder, *parts[start:])):
            return "/".join(parts[start:])
    return relative_to(absolute, folder)


def read_map(record: Record, folder: str, storage: Storage | None = None):
    """The map a record saved (``batch --save-maps``), as it was written: an ``(h, w)``
    float32 array at the layer's grid, read whole in one request (``folder``: the
    manifest's).

    Raises:
        OSError: it cannot be read; ValueError: it is no ``.npy`` file, or the record
            saved no map.
    """
    import io

    import numpy as np

    path = record.path(folder, "map")
    if path is None:
        raise ValueError(f"the record of {record.input} saved no map")
    with resolved(storage).store(path).open(path, "rb") as f:
        return np.load(io.BytesIO(f.read()), allow_pickle=False)


# -- writing -----------------------------------------------------------------------------


def manifest_name(shard: tuple[int, int] | None) -> str:
    """``manifest.jsonl``, or ``manifest.K-of-N.jsonl`` for one shard of a split run."""
    return MANIFEST_NAME if shard is None else f"manifest.{shard[0]}-of-{shard[1]}.jsonl"


class ManifestWriter:
    """Appends groups of records to one manifest file, each group in one ``write``."""

    def __init__(self, path: str, storage: Storage | None = None):
        self.path = path
        self._file = resolved(storage).store(path).appender(path)
        if not self._file.ends_cleanly():  # a line torn by a killed run: end it
            self._file.append(b"\n")

    def append(self, records: list[Record]) -> None:
        """Append ``records`` (one input's group) with one write, stamped with the time.

        Raises:
            OutputError: the manifest cannot be written.
        """
        stamp = now()
        for record in records:
            record.time = stamp
        data = "".join(record.to_json() + "\n" for record in records).encode("utf-8")
        try:
            self._file.append(data)
        except OSError as exc:
            raise OutputError(f"cannot write the manifest {self.path}: "
                              f"{exc.strerror or exc}; run the same command again to resume "
                              "once it can be written") from None

    def close(self) -> None:
        self._file.close()


# -- reading -----------------------------------------------------------------------------


def read(path: str, storage: Storage | None = None) -> Iterator[Record]:
    """The complete records of one manifest file, in order; torn or foreign lines are
    skipped. A missing file has none."""
    storage = resolved(storage)
    folder = locations.dirname(locations.absolute(path))
    try:
        f = storage.store(path).open(path, "r", encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return
    with f:
        for line in f:
            record = Record.from_json(line, folder, storage)
            if record is not None:
                yield record


def parts(folder: str, storage: Storage | None = None) -> list[str]:
    """Every manifest file in ``folder`` (the run's and each shard's, and in an object
    store their part objects, `camcli.io.remote.PartsAppender`), in a stable order: the
    run's manifest first, then by name (parts sort by their run's start)."""
    store = resolved(storage).store(folder)
    escaped = glob.escape(folder)
    found = store.glob(locations.join(escaped, "manifest*.jsonl"))
    if locations.is_url(folder):
        found += store.glob(locations.join(escaped, "manifest*", "part-*.jsonl"))
    return sorted(found, key=lambda p: (locations.basename(p) != MANIFEST_NAME, p))


@dataclass
class Group:
    """The records of one input from one run, as a reader keeps them.

    Attributes:
        request: the request they answer.
        time: when they were appended.
        by_rank: ``{rank: kept}``, a record's rank (None outside top-k runs, and for the
            asked class beside the ranks) to what the reader asked to keep of it
            (`latest`'s ``keep``: the record, or only its file names).
        failed: whether the input failed (an error record).
        legacy_class: for a schema-1 top-1 map, its class (see `answers`).
    """

    request: Request
    time: str
    by_rank: dict = field(default_factory=dict)
    failed: bool = False
    legacy_class: int | None = None

    def in_rank_order(self) -> list:
        """What was kept of each record: the asked class's (or the only one) first, then
        rank 1, 2, ..."""
        return [self.by_rank[rank] for rank in sorted(self.by_rank, key=lambda r: r or 0)]

    def answers(self, request: Request) -> bool:
        """Whether these records answer ``request``."""
        if request == self.request:
            return True
        # Schema 1 did not say what was asked: its map of the top class c answered
        # "explain c" as well as "explain the top class".
        return (self.legacy_class is not None and request.target == "class"
                and request == Request(self.request.model, self.request.layer,
                                       self.request.method, "class", self.legacy_class,
                                       "option"))


def latest(folder: str, keep: Callable[[Record], object] = lambda record: record,
           files: set[str] | None = None, storage: Storage | None = None
           ) -> dict[str, Group]:
    """The latest group of every input over all the manifests in ``folder`` (or only those
    of them in ``files``, absolute paths).

    Within a file the later group wins; across files, the later ``time`` (then the later
    file). ``keep(record)`` is what is kept per record (the whole record by default;
    resume keeps only the paths, so memory stays small on big runs).
    """
    storage = resolved(storage)
    chosen: dict[str, Group] = {}
    for path in parts(folder, storage):
        if files is not None and locations.absolute(path) not in files:
            continue
        current: dict[str, Group] = {}
        for record in read(path, storage):
            group = current.get(record.input)
            if group is None or group.request != record.request or record.rank in group.by_rank \
                    or group.failed or record.error is not None:
                group = current[record.input] = Group(record.request, record.time)
            group.by_rank[record.rank] = keep(record)
            group.failed = group.failed or record.error is not None
            if record.schema == 1 and record.request.target == "top1":
                group.legacy_class = record.class_index
        for key, group in current.items():
            if key not in chosen or group.time >= chosen[key].time:
                chosen[key] = group
    return chosen
