"""Storage: every byte of data camcli reads or writes, and every folder it lists, goes
through a store, one per kind of location.

What goes through it: photos (`camcli.io.images`), class tables and labels files
(`camcli.io.tables`, `camcli.io.labels`), the inputs' listing (`camcli.io.inputs`),
manifests (`camcli.records.manifest`), pictures and maps (`camcli.run.outputs`), reports
and their thumbnails (`camcli.analysis.report`), trained models and their reports
(`camcli.run.train`), model files (`camcli.compute.models.loading`). The other modules
name locations (`camcli.io.locations`) and call a store's methods; none opens, lists or
renames by itself.

A `Storage` is a value: built once per command from ``--storage-option KEY=VALUE`` pairs
(and ``CAMCLI_PART_RECORDS``), handed down to what reads and writes, and pickled to Ray's
actors as its settings. `Storage.store` picks the store: a plain path (or ``file://``) is
local (`camcli.io.local.LocalStore`: the ``os`` module, atomic renames, an ``O_APPEND``
manifest); a URL (``s3://``, ``gs://``, ``az://``, any fsspec protocol) is a
`camcli.io.remote.FsspecStore`, whose methods have the same names and meanings. Object
stores have no rename and no append: a whole object is one PUT (atomic), and a manifest
there is a series of part objects, each written whole. Credentials and endpoints come from
each store's own standard chain (``AWS_*`` variables and profiles, Google's application
default credentials, Azure's); no message and no ``repr`` shows the options.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence

from camcli.errors import UsageProblem
from camcli.io.local import LocalStore
from camcli.io.locations import scheme
from camcli.io.remote import EXTRAS, FsspecStore

#: Records per manifest part object in an object store (`camcli.io.remote.PartsAppender`):
#: fewer lose less to a kill and cost more requests.
PART_RECORDS = 256
#: The environment variable that changes `PART_RECORDS` (tests and tuning).
PART_RECORDS_VARIABLE = "CAMCLI_PART_RECORDS"

_LOCAL = LocalStore()


class Storage:
    """The stores of one command: the local filesystem, and one fsspec store per URL
    scheme, made on first use with ``options``.

    Args:
        options: fsspec options for every URL store (``--storage-option KEY=VALUE``);
            values that look like numbers or booleans are passed as such.
        part_records: records per manifest part object in an object store.
    """

    def __init__(self, options: Mapping[str, str] | None = None,
                 part_records: int = PART_RECORDS):
        if isinstance(part_records, bool) or not isinstance(part_records, int) \
                or part_records < 1:
            raise ValueError(f"part_records must be a whole number of at least 1, "
                             f"not {part_records!r}")
        self.options = dict(options or {})
        self.part_records = part_records
        self._stores: dict[str, FsspecStore] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, pairs: Sequence[str] = (), environ: Mapping[str, str] | None = None
                      ) -> Storage:
        """The storage ``--storage-option`` pairs (``KEY=VALUE``) and the environment's
        ``CAMCLI_PART_RECORDS`` ask for.

        Raises:
            UsageProblem: a pair is not ``KEY=VALUE``, or the variable is not a whole
                number of at least 1.
        """
        import os

        try:
            options = option_pairs(pairs)
        except ValueError as exc:
            raise UsageProblem(f"{{storage_options}}: {exc}", ("storage_options",)) from None
        said = (os.environ if environ is None else environ).get(PART_RECORDS_VARIABLE)
        part_records = PART_RECORDS
        if said is not None:
            try:
                part_records = int(said)
            except ValueError:
                part_records = 0
            if part_records < 1:
                raise UsageProblem(f"{PART_RECORDS_VARIABLE}={said!r}: give a whole number of "
                                   "records per manifest part, at least 1 (default "
                                   f"{PART_RECORDS})")
        return cls(options, part_records)

    def __repr__(self) -> str:  # never the options' values: they may hold secrets
        return f"Storage(options={sorted(self.options)}, part_records={self.part_records})"

    def __eq__(self, other) -> bool:
        return isinstance(other, Storage) and (self.options, self.part_records) == \
            (other.options, other.part_records)

    def __hash__(self) -> int:
        return hash((tuple(sorted(self.options.items())), self.part_records))

    def __getstate__(self) -> dict:  # the settings travel; each process makes its stores
        return {"options": self.options, "part_records": self.part_records}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["options"], state["part_records"])

    def store(self, location: str) -> LocalStore | FsspecStore:
        """The store that holds ``location``: local for a path or ``file://``, else the
        fsspec back end of the URL's scheme (one per scheme, made once).

        Raises:
            UsageProblem: the scheme's back end is not installed (naming camcli's extra) or
                fsspec knows no such scheme.
        """
        kind = scheme(location)
        if kind is None:
            return _LOCAL
        with self._lock:
            if kind not in self._stores:
                self._stores[kind] = self._made(kind, location)
            return self._stores[kind]

    def _made(self, kind: str, location: str) -> FsspecStore:
        module, extra = EXTRAS.get(kind, (None, None))
        try:
            import importlib.util

            import fsspec

            if module is not None and importlib.util.find_spec(module) is None:
                raise ImportError(module)
            fsspec.get_filesystem_class(kind)
            return FsspecStore(kind, self.options, self.part_records)
        except ImportError:
            name = module or "its fsspec back end"
            hint = f"pip install 'camcli[{extra}]'" if extra else f"install {name}"
            raise UsageProblem(f"{location}: {kind}:// needs {name}, which is not installed: "
                               f"{hint}") from None
        except ValueError:
            raise UsageProblem(f"{location}: unknown storage scheme {kind}://") from None


def option_pairs(pairs: Sequence[str]) -> dict[str, str]:
    """``KEY=VALUE`` pairs as a dict (a later key wins; keys stripped).

    Raises:
        ValueError: naming the first pair that is not ``KEY=VALUE``.
    """
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"{pair!r} is not KEY=VALUE")
        options[key.strip()] = value
    return options


def resolved(storage: Storage | None) -> Storage:
    """``storage``, or a `Storage` with no options (fsspec's defaults) when None."""
    return storage if storage is not None else Storage()
