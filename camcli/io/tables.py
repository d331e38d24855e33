"""Labelled tables: per input, its class and optionally a box (``--class-from FILE``,
``score --truth``, ``audit --truth``).

A table names, per input, its class and optionally a box: CSV with a header
(``input,class[,x0,y0,x1,y1]``), JSON lines (``{"input": ..., "class": ..., "box": [x0, y0,
x1, y1]}``, or ``x0``... keys), or a COCO annotation file (``images``, ``annotations``
with ``bbox`` = x, y, width, height, ``categories``). Boxes are in the photo's pixels,
``x1`` and ``y1`` exclusive. `camcli score` reads the same tables as ground truth.

A row's ``input`` is matched against an input's path by its trailing parts (`Table`): a
path relative to the input root (``airplanes/image_0001.jpg``), a file name when it names
one input only, or an absolute path. This is the one rule of every command that reads a
table (``--class-from``, ``score``, ``audit``); a row name that several inputs end with is
refused, never guessed. Class names go through the model's labels as for
``--class``: case-insensitive, with ``_``, ``-`` and space equal; a WordNet id or an index
work too.
"""

from __future__ import annotations

import csv
import json
import os
from collections import defaultdict
from dataclasses import dataclass

from camcli.errors import UsageProblem
from camcli.io import locations
from camcli.io.storage import Storage, resolved


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


def read_table(path: str, storage: Storage | None = None) -> list[Row]:
    """Read a CSV, JSON-lines or COCO table (see the module docstring).

    Raises:
        UsageProblem: the file cannot be read or has no ``input`` column / key.
    """
    try:
        with resolved(storage).store(path).open(path, "r", encoding="utf-8-sig") as f:
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
            self._users[key].add(locations.absolute(path))
        return key

    def shared(self, key: str) -> bool:
        """Whether the row name ``key`` was claimed by several inputs."""
        return len(self._users.get(key, ())) > 1

    def ambiguous(self) -> list[str]:
        """The row names claimed by several inputs, sorted."""
        return sorted(key for key, users in self._users.items() if len(users) > 1)

    def refuse_ambiguous(self) -> None:
        """Refuse the table when a row name was claimed by several inputs of the run (two
        ``image_0001.jpg`` in two class folders): whose boxes they are cannot be told.

        Raises:
            UsageProblem: naming up to five such rows.
        """
        ambiguous = self.ambiguous()
        if ambiguous:
            raise UsageProblem(f"{self.source}: {len(ambiguous)} row name(s) match several "
                               f"inputs of the run ({', '.join(ambiguous[:5])}); give their "
                               "paths from the input folder")

    def key(self, path: str) -> str | None:
        """The table's name for ``path``: the longest of its rows' inputs that ends the
        path on a folder boundary (or equals it), else None."""
        parts = locations.absolute(path).replace(os.sep, "/").split("/")
        for start in range(len(parts)):
            candidate = "/".join(parts[start:])
            if candidate in self.rows:
                return candidate
        return None
