"""The local filesystem (and anything mounted on it): `LocalStore`, and `Appender`, the
``O_APPEND`` file a local manifest grows in. Whole files are written atomically
(`camcli.io.atomic`: a temporary file, then a rename).
"""

from __future__ import annotations

import contextlib
import glob as globbing
import os
import stat
import tempfile
from collections.abc import Iterator
from typing import IO

from camcli.io import atomic


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

    def writing(self, path: str) -> contextlib.AbstractContextManager[str]:
        """A local file name to write ``path``'s new content to, for libraries that write
        by name (Keras); put in place whole when the block ends without an error
        (`camcli.io.atomic.writing`)."""
        return atomic.writing(path)

    def appender(self, path: str) -> Appender:
        """An `Appender` on ``path`` (created if missing).

        Raises:
            OSError: it cannot be opened.
        """
        return Appender(path)


