"""A class per image (``--class-from folder | FILE``), and the labelled tables it reads.

A table names, per input, its class and optionally a box: CSV with a header
(``input,class[,x0,y0,x1,y1]``), JSON lines (``{"input": ..., "class": ..., "box": [x0, y0,
x1, y1]}``, or ``x0``... keys), or a COCO annotation file (``images``, ``annotations``
with ``bbox`` = x, y, width, height, ``categories``). Boxes are in the photo's pixels,
``x1`` and ``y1`` exclusive. `camcli score` reads the same tables as ground truth.

A row's ``input`` is matched against an input's path by its trailing parts: a path
relative to the input root (``airplanes/image_0001.jpg``), a file name when it names one
input only, or an absolute path. Class names go through the model's labels as for
``--class``: case-insensitive, with ``_``, ``-`` and space equal; a WordNet id or an index
work too.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from camcli import storage
from camcli.errors import UsageProblem
from camcli.inputs import InputItem
from camcli.labels import Resolver
from camcli.storage import store_for

#: ``--class-from`` value meaning "each input's parent folder names its class".
FOLDER = "folder"


@dataclass(frozen=True)
class Row:
    """One row of a labelled table.

    Attributes:
        input: the input's path as the table gives it ('/'-separated).
        label: its class (a name, WordNet id or index), or None.
        box: ``(x0, y0, x1, y1)`` in the photo's pixels, or None.
    """

    input: str
    label: str | None
    box: tuple[float, float, float, float] | None = None


def read_table(path: str) -> list[Row]:
    """Read a CSV, JSON-lines or COCO table (see the module docstring).

    Raises:
        UsageProblem: the file cannot be read or has no ``input`` column / key.
    """
    try:
        with store_for(path).open(path, "r", encoding="utf-8-sig") as f:
            text = f.read()
    except OSError as exc:
        raise UsageProblem(f"cannot read {path}: {exc.strerror or exc}") from None
    lower = path.lower()
    if lower.endswith(".csv"):
        return _csv_rows(path, text)
    stripped = text.lstrip()
    if lower.endswith(".json") and stripped.startswith("{"):
        try:
            document = json.loads(text)
        except ValueError:
            document = None
        if isinstance(document, dict) and "annotations" in document:
            return _coco_rows(path, document)
    return _json_lines_rows(path, text)


def _csv_rows(path: str, text: str) -> list[Row]:
    reader = csv.DictReader(text.splitlines())
    if not reader.fieldnames or "input" not in [f.strip() for f in reader.fieldnames]:
        raise UsageProblem(f"{path}: a CSV table needs a header row with an 'input' column "
                           "(input,class[,x0,y0,x1,y1])")
    rows = []
    for number, raw in enumerate(reader, 2):
        row = {(key or "").strip(): (value or "").strip() for key, value in raw.items()}
        rows.append(_row(path, number, row))
    return rows


def _json_lines_rows(path: str, text: str) -> list[Row]:
    rows = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            raise UsageProblem(f"{path}, line {number}: not JSON") from None
        if not isinstance(row, dict):
            raise UsageProblem(f"{path}, line {number}: not a JSON object")
        rows.append(_row(path, number, row))
    return rows


def _row(path: str, number: int, row: dict) -> Row:
    name = row.get("input")
    if not name:
        raise UsageProblem(f"{path}, row {number}: no input")
    label = row.get("class")
    box = row.get("box")
    if box is None and all(row.get(key) not in (None, "") for key in ("x0", "y0", "x1", "y1")):
        box = [row[key] for key in ("x0", "y0", "x1", "y1")]
    if box is not None:
        try:
            box = tuple(float(value) for value in box)
        except (TypeError, ValueError):
            raise UsageProblem(f"{path}, row {number}: the box is not four numbers") from None
        if len(box) != 4 or box[2] <= box[0] or box[3] <= box[1]:
            raise UsageProblem(f"{path}, row {number}: a box is x0, y0, x1, y1 with "
                               "x1 > x0 and y1 > y0")
    text = str(label).strip() if label not in (None, "") else None
    return Row(_normal(str(name)), text, box)


def _coco_rows(path: str, document: dict) -> list[Row]:
    try:
        files = {image["id"]: image["file_name"] for image in document.get("images", [])}
        names = {category["id"]: category["name"]
                 for category in document.get("categories", [])}
        rows = []
        for annotation in document["annotations"]:
            x, y, width, height = (float(v) for v in annotation["bbox"])
            rows.append(Row(_normal(files[annotation["image_id"]]),
                            names.get(annotation.get("category_id")),
                            (x, y, x + width, y + height)))
    except (KeyError, TypeError, ValueError) as exc:
        raise UsageProblem(f"{path}: not a COCO annotation file ({type(exc).__name__}: "
                           f"{exc})") from None
    return rows


def _normal(name: str) -> str:
    name = name.replace("\\", "/")
    while name.startswith("./"):
        name = name[2:]
    return name


class Table:
    """A labelled table, indexed to find an input's rows by its path's trailing parts.

    `claim` remembers which inputs a row name was used for, so that a name that matches
    several inputs (two ``x.jpg`` in different folders) is found (`ambiguous`).
    """

    def __init__(self, rows: list[Row], source: str):
        self.source = source
        self.rows: dict[str, list[Row]] = defaultdict(list)
        for row in rows:
            self.rows[row.input].append(row)
        self._users: dict[str, set[str]] = defaultdict(set)  # row name -> inputs

    def claim(self, path: str) -> str | None:
        """`key` of ``path``, remembering that ``path`` uses it."""
        key = self.key(path)
        if key is not None:
            self._users[key].add(storage.absolute(path))
        return key

    def shared(self, key: str) -> bool:
        """Whether the row name ``key`` was claimed by several inputs."""
        return len(self._users.get(key, ())) > 1

    def ambiguous(self) -> list[str]:
        """The row names claimed by several inputs, sorted."""
        return sorted(key for key, users in self._users.items() if len(users) > 1)

    def key(self, path: str) -> str | None:
        """The table's name for ``path``: the longest of its rows' inputs that ends the
        path on a folder boundary (or equals it), else None."""
        parts = storage.absolute(path).replace(os.sep, "/").split("/")
        for start in range(len(parts)):
            candidate = "/".join(parts[start:])
            if candidate in self.rows:
                return candidate
        return None


@dataclass
class _Outcome:
    requested_class: int | None = None
    problem: str | None = None
    name: str | None = None  # the class text, for the report of unknown names


class ClassAssigner:
    """Gives each input the class it asks for, from its folder or from a table.

    Args:
        source: `FOLDER`, or the path of a table.
        labels: the model's class names (`camcli.labels.Labels`).
        num_classes: the model's number of classes.
        skip_unknown: give inputs whose class cannot be resolved an error record instead
            of refusing the run.
    """

    def __init__(self, source: str, labels, num_classes: int, skip_unknown: bool = False):
        self.source = source
        self.labels, self.skip_unknown = labels, skip_unknown
        self.table = None if source == FOLDER else Table(read_table(source), source)
        self._resolve = Resolver(labels, num_classes)

    def check(self, items: Iterable[InputItem]) -> int:
        """Look at every input once, before any work; returns how many there are.

        Raises:
            UsageProblem: some inputs' classes cannot be resolved (listed, with the
                closest labels) and ``skip_unknown`` is off.
        """
        count, unknown, missing = 0, Counter(), 0
        for item in items:
            count += 1
            outcome = self._outcome(item, record_use=True)
            if outcome.name is not None and outcome.requested_class is None:
                unknown[outcome.name] += 1
            elif outcome.problem is not None:
                missing += 1
        ambiguous = self.table.ambiguous() if self.table is not None else []
        if (unknown or missing or ambiguous) and not self.skip_unknown:
            raise UsageProblem(self._refusal(unknown, missing, ambiguous),
                               ("class_from", "skip_unknown_classes"))
        return count

    def assign(self, items: Iterable[InputItem]) -> Iterator[InputItem]:
        """The inputs with their ``requested_class`` set, or their ``problem``."""
        for item in items:
            outcome = self._outcome(item)
            yield dataclasses.replace(item, requested_class=outcome.requested_class,
                                      problem=outcome.problem)

    # -- per input ------------------------------------------------------------------------

    def _outcome(self, item: InputItem, record_use: bool = False) -> _Outcome:
        if self.table is None:
            name = storage.basename(storage.dirname(storage.absolute(item.path)))
            where = "its folder"
        else:
            key = self.table.claim(item.path) if record_use else self.table.key(item.path)
            if key is None:
                return _Outcome(problem=f"no class for this input in {self.source}")
            if not record_use and self.table.shared(key):
                return _Outcome(problem=f"'{key}' in {self.source} names several inputs; "
                                        "give its path from the input folder")
            names = sorted({row.label for row in self.table.rows[key] if row.label})
            if len(names) != 1:
                what = "no class" if not names else f"several classes ({', '.join(names)})"
                return _Outcome(problem=f"{self.source} gives this input {what}")
            name, where = names[0], self.source
        index = self._resolve(name)
        if index is None:
            return _Outcome(problem=f"class {name!r} (from {where}) is not a class of the "
                                    "model", name=name)
        return _Outcome(requested_class=index, name=name)

    def _refusal(self, unknown: Counter, missing: int, ambiguous: list[str]) -> str:
        source = "folder names" if self.table is None else self.source
        parts = []
        if unknown:
            shown = [f"{name!r} ({count} input{'s' if count > 1 else ''}{self._closest(name)})"
                     for name, count in sorted(unknown.items())[:10]]
            more = f" and {len(unknown) - 10} more" if len(unknown) > 10 else ""
            parts.append(f"{len(unknown)} class name{'s' if len(unknown) > 1 else ''} in "
                         f"{source} {'are' if len(unknown) > 1 else 'is'} not "
                         f"{'classes' if len(unknown) > 1 else 'a class'} of the model: "
                         f"{', '.join(shown)}{more}")
        if missing:
            parts.append(f"{missing} input{'s have' if missing > 1 else ' has'} no class in "
                         f"{source}")
        if ambiguous:
            parts.append(f"{len(ambiguous)} row name{'s' if len(ambiguous) > 1 else ''} in "
                         f"{source} match several inputs ({', '.join(ambiguous[:5])})")
        return ("{class_from}: " + "; ".join(parts) + "; pass {skip_unknown_classes} to give "
                "those inputs an error record and go on")

    def _closest(self, name: str) -> str:
        close = self.labels.closest(name)
        return f"; closest: {', '.join(close)}" if close else ""


def with_classes(walk: Callable[[], Iterable[InputItem]], assigner: ClassAssigner | None
                 ) -> tuple[int, Iterator[InputItem]]:
    """How many inputs ``walk()`` gives, and the inputs with their classes.

    ``walk`` is called once: its listing is kept (a few hundred bytes an input, as the
    run's set of seen inputs already is), so a tree on a shared filesystem or in a bucket
    is listed once, and the progress bar's total comes from that listing. With an
    ``assigner`` every input's class is checked before any work (`ClassAssigner.check`
    refuses the run), then assigned; without one the inputs come as they are.
    """
    listed = list(walk())
    if assigner is None:
        return len(listed), iter(listed)
    return assigner.check(listed), assigner.assign(listed)
