"""A class per image (``--class-from folder | FILE``): each input's class from its parent
folder or from a labelled table (`camcli.io.tables`), resolved through the model's labels.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from camcli.errors import UsageProblem
from camcli.io import locations
from camcli.io.inputs import InputItem
from camcli.io.labels import Resolver
from camcli.io.storage import Storage
from camcli.io.tables import Table, read_table

#: ``--class-from`` value meaning "each input's parent folder names its class".
FOLDER = "folder"


@dataclass
class _Outcome:
    requested_class: int | None = None
    problem: str | None = None
    name: str | None = None  # the class text, for the report of unknown names


class ClassAssigner:
    """Gives each input the class it asks for, from its folder or from a table.

    Args:
        source: `FOLDER`, or the path of a table.
        labels: the model's class names (`camcli.io.labels.Labels`).
        num_classes: the model's number of classes.
        skip_unknown: give inputs whose class cannot be resolved an error record instead
            of refusing the run.
        storage: where the table is read.
    """

    def __init__(self, source: str, labels, num_classes: int, skip_unknown: bool = False,
                 storage: Storage | None = None):
        self.source = source
        self.labels, self.skip_unknown = labels, skip_unknown
        self.table = None if source == FOLDER else Table(read_table(source, storage), source)
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
            name = locations.basename(locations.dirname(locations.absolute(item.path)))
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
