"""Class names: the ImageNet-1k names shipped with camcli, or a user's labels file.

Keras' `decode_predictions` downloads the ImageNet class index at run time, which fails
offline; camcli ships the same file (``camcli/data/imagenet_class_index.json``).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

from camcli.errors import ClassError, UsageProblem
from camcli.io.storage import Storage, resolved


@dataclass(frozen=True)
class Labels:
    """Names of a model's classes, indexable by class index.

    Attributes:
        names: one display name per class.
        ids: optional stable identifiers (ImageNet WordNet ids), same length as names.
    """

    names: tuple[str, ...]
    ids: tuple[str, ...] | None = None

    def __len__(self) -> int:
        return len(self.names)

    def name(self, index: int) -> str:
        """The name of class ``index`` (``class_<index>`` beyond the list)."""
        return self.names[index] if 0 <= index < len(self.names) else f"class_{index}"

    def resolve(self, spec: str | int, num_classes: int) -> int:
        """Turn a --class value (index, WordNet id or name) into a class index.

        Names are compared case-insensitively, with spaces, dashes and underscores equal.

        Raises:
            ClassError: out of range, unknown or ambiguous (e.g. ImageNet's two "crane"s).
        """
        text = str(spec).strip()
        if re.fullmatch(r"\d+", text):
            index = int(text)
            if index >= num_classes:
                raise ClassError(
                    f"class index {index} is out of range: the model has {num_classes} classes "
                    f"(0-{num_classes - 1})"
                )
            return index
        if self.ids and text in self.ids:
            return self.ids.index(text)
        key = _normalise(text)
        matches = [i for i, n in enumerate(self.names) if _normalise(n) == key]
        if len(matches) == 1 and matches[0] < num_classes:
            return matches[0]
        if len(matches) > 1:
            spelled = ", ".join(
                f"{i}" + (f" ({self.ids[i]})" if self.ids else "") for i in matches
            )
            raise ClassError(
                f"class name {text!r} is ambiguous: it names classes {spelled}; "
                "give the index instead"
            )
        raise ClassError(f"unknown class {text!r}: give a class index (0-{num_classes - 1}) "
                         "or a name from the model's labels")

    def closest(self, name: str, count: int = 3, cutoff: float = 0.75) -> list[str]:
        """Up to ``count`` names most like ``name`` (compared as `resolve` compares), for
        an error message; ``cutoff`` is difflib's similarity floor."""
        import difflib

        names = {_normalise(label): label for label in self.names}
        close = difflib.get_close_matches(_normalise(name), list(names), n=count,
                                          cutoff=cutoff)
        return [names[c] for c in close]


class Resolver:
    """Class names (or WordNet ids, or indices) to class indices through a model's labels,
    each name resolved once; a name that names no class gives None.

    Args:
        labels: the model's `Labels`.
        num_classes: the model's number of classes.
    """

    def __init__(self, labels: Labels, num_classes: int):
        self.labels, self.num_classes = labels, num_classes
        self._cache: dict[str, int | None] = {}

    def __call__(self, name: str) -> int | None:
        if name not in self._cache:
            try:
                self._cache[name] = self.labels.resolve(name, self.num_classes)
            except ClassError:
                self._cache[name] = None
        return self._cache[name]

    @property
    def unresolved(self) -> list[str]:
        """The names looked up so far that name no class, sorted."""
        return sorted(name for name, index in self._cache.items() if index is None)


def _normalise(name: str) -> str:
    return re.sub(r"[\s_\-]+", " ", name.strip().lower())


@lru_cache(maxsize=1)
def imagenet() -> Labels:
    """The 1000 ImageNet-1k classes, in Keras' order and spelling."""
    text = resources.files("camcli").joinpath("data/imagenet_class_index.json").read_text()
    index = json.loads(text)
    rows = [index[str(i)] for i in range(len(index))]
    return Labels(names=tuple(r[1] for r in rows), ids=tuple(r[0] for r in rows))


def from_file(path: str, storage: Storage | None = None) -> Labels:
    """Read a labels file, in class-index order:

    * text: one class name per line (blank lines at the end ignored);
    * JSON: a list of names (``["cat", "dog"]``), an object from index to name
      (``{"0": "cat", "1": "dog"}``), or Keras' ImageNet index, index to ``[id, name]``
      (``{"0": ["n01440764", "tench"]}``; the ids then work for ``--class`` too).

    A file ending in ``.json``, or whose text is valid JSON of those shapes, is read as
    JSON; anything else is text.

    Raises:
        UsageProblem: the file cannot be read, is empty, or is JSON of another shape
            (indices with gaps, names that are not strings).
    """
    try:
        with resolved(storage).store(path).open(path, "r", encoding="utf-8-sig") as f:
            text = f.read()
    except OSError as exc:
        raise UsageProblem(f"cannot read labels file {path}: {exc.strerror or exc}") from None
    if text.lstrip()[:1] in ("[", "{"):
        try:
            document = json.loads(text)
        except ValueError as exc:
            if path.lower().endswith(".json"):
                raise UsageProblem(f"labels file {path} is not valid JSON ({exc})") from None
        else:
            return _from_json(path, document)
    lines = [line.rstrip("\r") for line in text.split("\n")]
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        raise UsageProblem(f"labels file {path} is empty")
    return Labels(names=tuple(line.strip() for line in lines))


def _from_json(path: str, document) -> Labels:
    if isinstance(document, dict):
        try:
            by_index = {int(key): value for key, value in document.items()}
        except ValueError:
            raise UsageProblem(f"labels file {path}: a JSON object's keys must be class "
                               "indices (\"0\", \"1\", ...)") from None
        missing = sorted(set(range(len(by_index))) - set(by_index))
        if missing:
            shown = ", ".join(map(str, missing[:10])) + (" ..." if len(missing) > 10 else "")
            raise UsageProblem(f"labels file {path}: the indices must run from 0 to "
                               f"{len(by_index) - 1} without gaps; missing {shown}")
        entries = [by_index[index] for index in range(len(by_index))]
    elif isinstance(document, list):
        entries = document
    else:
        raise UsageProblem(f"labels file {path}: JSON labels are a list of names or an "
                           "object from index to name")
    if not entries:
        raise UsageProblem(f"labels file {path} is empty")
    pairs = all(isinstance(e, list) and len(e) == 2 and all(isinstance(v, str) for v in e)
                for e in entries)
    if pairs:  # Keras' ImageNet index: [WordNet id, name]
        return Labels(names=tuple(e[1] for e in entries), ids=tuple(e[0] for e in entries))
    wrong = next((number for number, e in enumerate(entries) if not isinstance(e, str)), None)
    if wrong is not None:
        raise UsageProblem(f"labels file {path}: class {wrong} is not a name "
                           f"({json.dumps(entries[wrong])[:40]})")
    return Labels(names=tuple(name.strip() for name in entries))


def generic(num_classes: int) -> Labels:
    """Placeholder names ``class_0`` ... for a model without labels."""
    return Labels(names=tuple(f"class_{i}" for i in range(num_classes)))
