"""A bench script's tables, written into the docs page that states them.

Run with ``--docs``, a script that prints inside ``published(script, page, True)`` also
replaces the text of ``page`` between its two markers with what it printed::

    <!-- bench/precision.py: written by `python bench/precision.py --docs` -->
    ... the tables, as the script printed them on the machine it ran on ...
    <!-- /bench/precision.py -->

so a figure in the docs is the output of a run, never retyped (`tests/test_docs.py` checks
that every such block names a script that writes it).
"""

from __future__ import annotations

import contextlib
import io
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def markers(script: str) -> tuple[str, str]:
    return (f"<!-- bench/{script}: written by `python bench/{script} --docs` -->",
            f"<!-- /bench/{script} -->")


class _Tee(io.TextIOBase):
    def __init__(self, first, second):
        self.first, self.second = first, second

    def write(self, text: str) -> int:
        self.first.write(text)
        return self.second.write(text)

    def flush(self) -> None:
        self.first.flush()


@contextlib.contextmanager
def published(script: str, page: str, write: bool):
    """Print as usual; with ``write``, put what was printed between ``script``'s markers in
    ``page`` (relative to the repository) afterwards.

    Raises:
        SystemExit: the page has no such markers.
    """
    captured = io.StringIO()
    with contextlib.redirect_stdout(_Tee(sys.stdout, captured)):
        yield
    if not write:
        return
    path = REPO / page
    text = path.read_text(encoding="utf-8")
    start, end = markers(script)
    if start not in text or end not in text:
        raise SystemExit(f"{page} has no block for bench/{script}: add\n{start}\n{end}")
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    path.write_text(f"{head}{start}\n{captured.getvalue().strip()}\n{end}{tail}",
                    encoding="utf-8")
    print(f"wrote its tables into {page}", file=sys.stderr)
