"""Object stores and every other fsspec protocol (``s3://``, ``gs://``, ``az://``):
`FsspecStore`, with `camcli.io.local.LocalStore`'s methods, and `PartsAppender`, a
manifest as whole part objects (an object store has no append and no rename).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from typing import IO

from camcli.errors import UsageProblem
from camcli.io.checkpoints import reached
from camcli.io.locations import absolute

#: URL schemes whose fsspec back end is an extra of camcli's: scheme -> (module, extra).
EXTRAS = {"s3": ("s3fs", "s3"), "s3a": ("s3fs", "s3"), "gs": ("gcsfs", "gcs"),
          "gcs": ("gcsfs", "gcs"), "az": ("adlfs", "azure"), "abfs": ("adlfs", "azure"),
          "abfss": ("adlfs", "azure")}


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
    ``every`` groups (`camcli.io.storage.Storage.part_records`) or `FLUSH_SECONDS`,
    whichever comes first, and at `close`. A killed run loses only its unflushed records:
    their inputs are redone."""

    FLUSH_SECONDS = 10.0

    def __init__(self, store: FsspecStore, path: str, every: int):
        self.store, self.path = store, path
        self.every = every
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
    `camcli.io.local.LocalStore`'s methods. Locations are full URLs in and out.

    Args:
        protocol: the URL scheme (``s3``).
        options: ``--storage-option`` pairs, passed to fsspec (`_value` types them).
        part_records: records per manifest part (`PartsAppender`).
    """

    def __init__(self, protocol: str, options: dict[str, str] | None = None,
                 part_records: int = 256):
        import fsspec

        self.protocol = protocol
        self.part_records = part_records
        # Each `camcli.io.storage.Storage` keeps its own store per scheme: it must not get
        # fsspec's cached instance, made with other settings.
        self.fs = fsspec.filesystem(protocol, skip_instance_cache=True,
                                    **{k: _value(v) for k, v in (options or {}).items()})

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

    @contextlib.contextmanager
    def writing(self, path: str) -> Iterator[str]:
        """A local temporary file name to write ``path``'s new content to, for libraries
        that write by name (Keras): uploaded whole when the block ends without an error
        (one upload; a large file goes in parts, and the object appears only once all of
        them are in)."""
        import shutil
        import tempfile

        scratch = tempfile.mkdtemp(prefix="camcli-upload-")
        try:
            local = os.path.join(scratch, path.rstrip("/").rsplit("/", 1)[-1])
            yield local
            self.fs.put_file(local, self._key(path))
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    def appender(self, path: str) -> PartsAppender:
        return PartsAppender(self, path, self.part_records)


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


