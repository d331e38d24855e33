"""Storage: every byte of data camcli reads or writes, and every folder it lists, goes
through a `Store`, one per location.

What goes through it: photos (`camcli.images`), class tables and labels files
(`camcli.classes`, `camcli.labels`), the inputs' listing (`camcli.inputs`), manifests
(`camcli.manifest`), pictures and maps (`camcli.outputs`), reports and their thumbnails
(`camcli.report`), the training report (`camcli.train`). The other modules name locations
and call a store's methods; none opens, lists or renames by itself.

`store_for(location)` picks the store: a plain path (or ``file://``) is local
(`LocalStore`: the ``os`` module, atomic renames, an ``O_APPEND`` manifest); a URL
(``s3://``, ``gs://``, ``az://``, any fsspec protocol) is an `FsspecStore`, whose methods
have the same names and meanings. Object stores have no rename and no append: a whole
object is one PUT (atomic), and a manifest there is a series of part objects, each written
whole (`PartsAppender`). Credentials and endpoints come from each store's own standard
chain (``AWS_*`` variables and profiles, Google's application default credentials,
Azure's); `configure` passes ``--storage-option KEY=VALUE`` pairs to fsspec, and no message
shows them.

Locations are strings throughout: `join`, `dirname`, `basename`, `absolute` and
`relative` work on both kinds, so the other modules never call ``os.path`` on one. Model
files are read through the store into a local temporary copy (Keras reads paths); the
converted-weights cache stays local.
"""

from __future__ import annotations

import glob as globbing
import os
import posixpath
import stat
import tempfile
import time
from collections.abc import Iterator
from typing import IO

from camcli import atomic
from camcli.checkpoints import reached
from camcli.errors import UsageProblem

#: URL schemes whose fsspec back end is an extra of camcli's: scheme -> (module, extra).
EXTRAS = {"s3": ("s3fs", "s3"), "s3a": ("s3fs", "s3"), "gs": ("gcsfs", "gcs"),
          "gcs": ("gcsfs", "gcs"), "az": ("adlfs", "azure"), "abfs": ("adlfs", "azure"),
          "abfss": ("adlfs", "azure")}

_OPTIONS: dict[str, str] = {}


def configure(options: dict[str, str]) -> None:
    """Extra fsspec options for every URL store (``--storage-option KEY=VALUE``); values
    that look like numbers or booleans are passed as such."""
    _OPTIONS.clear()
    _OPTIONS.update(options)
    _STORES.clear()


def current_options() -> dict[str, str]:
    """The ``--storage-option`` pairs in force (for workers elsewhere: Ray's actors)."""
    return dict(_OPTIONS)


# -- locations ---------------------------------------------------------------------------


def scheme(location: str) -> str | None:
    """The URL scheme of ``location`` (``s3``), or None for a local path (``file://``
    included)."""
    head, sep, _ = location.partition("://")
    if not sep or not head or not head.replace("+", "").replace("-", "").isalnum():
        return None
    return None if head == "file" else head.lower()


def is_url(location: str) -> bool:
    return scheme(location) is not None


def _local(location: str) -> str:
    return location[len("file://"):] if location.startswith("file://") else location


def absolute(location: str) -> str:
    """``location`` made absolute: a local path as ``os.path.abspath``; a URL as it is,
    without a trailing ``/`` (an object's key is literal: ``a/../b`` and ``a//b`` are keys
    of their own, not paths to normalise)."""
    kind = scheme(location)
    if kind is None:
        return os.path.abspath(_local(location))
    rest = location.split("://", 1)[1].rstrip("/")
    return f"{kind}://{rest}"


def join(base: str, *parts: str) -> str:
    """``base`` and ``parts`` joined with the location's own separator (for a URL, always
    below ``base``, whatever the parts hold)."""
    if is_url(base):
        return "/".join([base.rstrip("/"), *parts])  # parts literal: a key's own segments
    return os.path.join(base, *parts)


def dirname(location: str) -> str:
    if is_url(location):
        kind, rest = location.split("://", 1)
        return f"{kind}://{rest.rstrip('/').rsplit('/', 1)[0] if '/' in rest else rest}"
    return os.path.dirname(location)


def basename(location: str) -> str:
    return location.rstrip("/").rsplit("/", 1)[-1] if is_url(location) else \
        os.path.basename(location)


#: Key segments that a path would read as something else, and how a relative name spells
#: them (so an output's key stays under ``--out``).
_LITERAL = {"": "%2F", ".": "%2E", "..": "%2E%2E"}


def relative(location: str, start: str) -> str:
    """``location`` relative to the folder ``start``, '/'-separated. Under a URL, the key's
    own segments, with an empty, ``.`` or ``..`` segment spelled ``%2F``, ``%2E``,
    ``%2E%2E``: a name that cannot climb out of a folder it is joined to."""
    if is_url(location) or is_url(start):
        location, start = absolute(location), absolute(start)
        if location.startswith(start + "/"):
            segments = location[len(start) + 1:].split("/")
            return "/".join(_LITERAL.get(segment, segment) for segment in segments)
        return posixpath.relpath(location.split("://", 1)[1], start.split("://", 1)[1])
    return os.path.relpath(absolute(location), absolute(start)).replace(os.sep, "/")


def inside(location: str, folder: str) -> bool:
    """Whether ``location`` is ``folder`` or under it (both absolute)."""
    separator = "/" if is_url(folder) else os.sep
    return location == folder or location.startswith(folder.rstrip(separator) + separator)


class NotARegularFile(OSError):
    """A path to read names a FIFO, a device or a socket (reading it could block for
    ever)."""


class Appender:
    """One file that grows by whole writes (a manifest): each `append` is one ``write`` on
    an ``O_APPEND`` descriptor, so concurrent or killed writers never interleave a line."""

    def __init__(self, path: str):
        self.path = path
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)

    def ends_cleanly(self) -> bool:
        """Whether the file is empty or ends with a newline (else a killed writer tore its
        last line)."""
        size = os.fstat(self._fd).st_size
        if not size:
            return True
        with open(self.path, "rb") as f:
            f.seek(size - 1)
            return f.read(1) == b"\n"

    def append(self, data: bytes) -> None:
        """Append ``data`` in one write (only a full disk writes part of it; the rest
        follows).

        Raises:
            OSError: it cannot be written.
        """
        written = os.write(self._fd, data)
        while written < len(data):
            written += os.write(self._fd, data[written:])

    def close(self) -> None:
        """Flush to the disk and close."""
        os.fsync(self._fd)
        os.close(self._fd)


class LocalStore:
    """The local filesystem (and anything mounted on it)."""

    def open(self, path: str, mode: str = "rb", **text) -> IO:
        """Open ``path`` to read (``rb``, or ``r`` with ``encoding`` / ``errors``).

        Raises:
            NotARegularFile: not a regular file; FileNotFoundError, IsADirectoryError,
                PermissionError and other OSErrors as the system says.
        """
        if "r" not in mode or any(c in mode for c in "wax+"):
            raise ValueError(f"a store opens files to read only, not {mode!r}")
        if not stat.S_ISREG(os.stat(path).st_mode):
            raise NotARegularFile(f"{path}: not a regular file")
        return open(path, mode, **text)

    def exists(self, path: str) -> bool:
        """Whether anything is at ``path`` (a broken symbolic link too)."""
        return os.path.lexists(path)

    def isfile(self, path: str) -> bool:
        return os.path.isfile(path)

    def isdir(self, path: str) -> bool:
        return os.path.isdir(path)

    def mtime(self, path: str) -> float:
        """When ``path`` was last modified (seconds since the epoch).

        Raises:
            OSError: it is not there.
        """
        return os.path.getmtime(path)

    def glob(self, pattern: str) -> list[str]:
        """The paths matching ``pattern`` (``**`` crosses folders), sorted."""
        return sorted(globbing.glob(pattern, recursive=True))

    def walk(self, top: str) -> Iterator[tuple[str, list[str], list[str]]]:
        """``(folder, subfolders, files)`` from ``top`` down, lazily, following symbolic
        links; the caller may prune ``subfolders`` in place, as with `os.walk`."""
        return os.walk(top, followlinks=True)

    def identity(self, folder: str) -> tuple[int, int] | None:
        """What tells two names of one folder apart from two folders (a symbolic link loop):
        device and inode; None when it cannot be read."""
        try:
            st = os.stat(folder)
        except OSError:
            return None
        return st.st_dev, st.st_ino

    def check_writable(self, folder: str) -> None:
        """Create ``folder`` if needed and check that a file can be written in it.

        Raises:
            OSError: it cannot.
        """
        os.makedirs(folder, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".camcli-probe-")
        os.close(fd)
        os.unlink(probe)

    def remove_leftovers(self, folder: str) -> int:
        """Remove what writers killed mid-write left under ``folder``; how many."""
        return atomic.remove_stale_temporaries(folder)

    def write_atomic(self, path: str, data: bytes) -> None:
        """Write ``data`` to ``path`` whole: a reader or a crash sees no file, the previous
        one or the new one, never part of it.

        Raises:
            OSError: it cannot be written.
        """
        atomic.write_atomic(path, data)

    def appender(self, path: str) -> Appender:
        """An `Appender` on ``path`` (created if missing).

        Raises:
            OSError: it cannot be opened.
        """
        return Appender(path)


class StoreUnreachable(UsageProblem):
    """A location in a store that cannot be used at all: no such bucket, no permission, no
    credentials (exit 2, before any work)."""


def _unreachable(location: str, exc: BaseException) -> StoreUnreachable:
    """One line for why ``location``'s store refuses; never the credentials."""
    name = type(exc).__name__
    if isinstance(exc, FileNotFoundError):
        why = "the bucket (or container) does not exist"
    elif isinstance(exc, PermissionError):
        why = "access denied: check the credentials and the bucket's policy"
    elif "Credential" in name:
        why = ("no credentials found: set the store's standard variables (AWS_* for S3), a "
               "profile, or run where an instance role applies")
    else:
        why = f"{name}: {str(exc).splitlines()[0] if str(exc) else 'cannot be reached'}"
    return StoreUnreachable(f"{location}: {why}")


class PartsAppender:
    """A manifest in an object store, which has no append: the appended records are
    buffered and written as whole part objects (one PUT each, so a part is there whole or
    not at all) under ``<manifest without .jsonl>/part-<run>-<n>.jsonl``, every
    `FLUSH_RECORDS` groups or `FLUSH_SECONDS`, whichever comes first, and at `close`. A
    killed run loses only its unflushed records: their inputs are redone."""

    FLUSH_RECORDS = 256
    FLUSH_SECONDS = 10.0

    def __init__(self, store: FsspecStore, path: str):
        self.store, self.path = store, path
        # CAMCLI_PART_RECORDS: records per part (fewer: less lost to a kill, more requests)
        self.every = int(os.environ.get("CAMCLI_PART_RECORDS", self.FLUSH_RECORDS))
        stem = path[:-len(".jsonl")] if path.endswith(".jsonl") else path
        # Runs sort by their start: nanoseconds since the epoch, then the process.
        self._prefix = f"{stem}/part-{time.time_ns():020d}-{os.getpid()}-"
        self._buffer: list[bytes] = []
        self._count = 0
        self._since = time.monotonic()

    def ends_cleanly(self) -> bool:
        return True  # parts are whole objects: nothing can be torn

    def append(self, data: bytes) -> None:
        self._buffer.append(data)
        if len(self._buffer) >= self.every or \
                time.monotonic() - self._since >= self.FLUSH_SECONDS:
            self.flush()

    def flush(self) -> None:
        """Write what is buffered as the next part (nothing when nothing is).

        Raises:
            OSError: it cannot be written (the records stay buffered).
        """
        if self._buffer:
            self.store.write_atomic(f"{self._prefix}{self._count:06d}.jsonl",
                                    b"".join(self._buffer))
            self._buffer.clear()
            self._count += 1
            reached("flushed")
        self._since = time.monotonic()

    def close(self) -> None:
        self.flush()


class FsspecStore:
    """An fsspec filesystem (object stores: ``s3://``, ``gs://``, ``az://``...), with
    `LocalStore`'s methods. Locations are full URLs in and out."""

    def __init__(self, protocol: str):
        import fsspec

        self.protocol = protocol
        # camcli keeps its own store per scheme (`store_for`); a new one, after `configure`,
        # must not get fsspec's cached instance with the old settings.
        self.fs = fsspec.filesystem(protocol, skip_instance_cache=True,
                                    **{k: _value(v) for k, v in _OPTIONS.items()})

    def __repr__(self) -> str:  # never the options: they may hold secrets
        return f"FsspecStore({self.protocol!r})"

    def _key(self, location: str) -> str:
        return location.split("://", 1)[1] if "://" in location else location

    def _url(self, key: str) -> str:
        return f"{self.protocol}://{key.lstrip('/')}"

    def open(self, path: str, mode: str = "rb", **text) -> IO:
        if "r" not in mode or any(c in mode for c in "wax+"):
            raise ValueError(f"a store opens files to read only, not {mode!r}")
        if self.fs.isdir(self._key(path)) and not self.fs.isfile(self._key(path)):
            raise IsADirectoryError(f"{path}: a folder")
        return self.fs.open(self._key(path), mode, **text)

    def exists(self, path: str) -> bool:
        return self.reachable(path)

    def isfile(self, path: str) -> bool:
        return self.fs.isfile(self._key(path))

    def isdir(self, path: str) -> bool:
        return self.fs.isdir(self._key(path))

    def mtime(self, path: str) -> float:
        return self.fs.modified(self._key(path)).timestamp()

    def glob(self, pattern: str) -> list[str]:
        return sorted(self._url(k) for k in self.fs.glob(self._key(pattern)))

    def find(self, top: str) -> list[str]:
        """Every object under ``top``, from one listing (paged by the store)."""
        return sorted(self._url(k) for k in self.fs.find(self._key(top)))

    def walk(self, top: str) -> Iterator[tuple[str, list[str], list[str]]]:
        """`LocalStore.walk`'s view of one listing of ``top`` (`find`): pruning
        ``subfolders`` skips them without another request."""
        top = absolute(top)
        tree: dict[str, tuple[set, list]] = {top: (set(), [])}
        for url in self.find(top):
            rest = url[len(top) + 1:]
            if "" in rest.split("/"):  # a key with an empty segment: a file of top, whole
                tree[top][1].append(rest)
                continue
            folder, name = url.rsplit("/", 1)
            tree.setdefault(folder, (set(), []))[1].append(name)
            while folder != top and folder.startswith(top + "/"):
                parent, child = folder.rsplit("/", 1)
                tree.setdefault(parent, (set(), []))[0].add(child)
                folder = parent
        pending = [top]
        while pending:
            folder = pending.pop(0)
            subfolders = sorted(tree.get(folder, (set(), []))[0])
            files = sorted(tree.get(folder, (set(), []))[1])
            yield folder, subfolders, files
            pending[:0] = [f"{folder}/{name}" for name in subfolders]

    def identity(self, folder: str) -> str | None:
        return absolute(folder)  # no links in an object store: the name is the folder

    def check_writable(self, folder: str) -> None:
        """Write and remove a probe object under ``folder``.

        Raises:
            StoreUnreachable: no such bucket, no permission, no credentials.
        """
        probe = f"{absolute(folder)}/.camcli-probe-{os.getpid()}-{time.time_ns()}"
        try:
            self.write_atomic(probe, b"")
            self.fs.rm(self._key(probe))
        except Exception as exc:  # botocore's and each back end's own kinds, translated
            raise _unreachable(folder, exc) from None

    def reachable(self, location: str) -> bool:
        """Whether anything is at ``location``.

        Raises:
            StoreUnreachable: the store refuses (permission, credentials), other than
                "not there".
        """
        try:
            return self.fs.exists(self._key(location))
        except FileNotFoundError:
            return False
        except Exception as exc:
            raise _unreachable(location, exc) from None

    def remove_leftovers(self, folder: str) -> int:
        return 0  # an object is written whole or not at all: nothing is left over

    def write_atomic(self, path: str, data: bytes) -> None:
        self.fs.pipe(self._key(path), data)

    def appender(self, path: str) -> PartsAppender:
        return PartsAppender(self, path)


def _value(text: str):
    """A ``--storage-option`` value as fsspec wants it: int, float, bool or the text."""
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


_LOCAL = LocalStore()
_STORES: dict[str, FsspecStore] = {}


def store_for(location: str) -> LocalStore | FsspecStore:
    """The store that holds ``location``: local for a path or ``file://``, else the
    fsspec back end of the URL's scheme.

    Raises:
        UsageProblem: the scheme's back end is not installed (naming camcli's extra) or
            fsspec knows no such scheme.
    """
    kind = scheme(location)
    if kind is None:
        return _LOCAL
    if kind not in _STORES:
        module, extra = EXTRAS.get(kind, (None, None))
        try:
            import importlib.util

            import fsspec

            if module is not None and importlib.util.find_spec(module) is None:
                raise ImportError(module)
            fsspec.get_filesystem_class(kind)
            _STORES[kind] = FsspecStore(kind)
        except ImportError:
            name = module or "its fsspec back end"
            hint = f"pip install 'camcli[{extra}]'" if extra else f"install {name}"
            raise UsageProblem(f"{location}: {kind}:// needs {name}, which is not installed: "
                               f"{hint}") from None
        except ValueError:
            raise UsageProblem(f"{location}: unknown storage scheme {kind}://") from None
    return _STORES[kind]
