"""Atomic file writing: a temporary file in the target folder, then a rename.

A reader (or a crash) sees either no file, the previous file, or the complete new one —
never a truncated file.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
from collections.abc import Iterator

from camcli.io.checkpoints import reached

#: Temporary files are ``.camcli-<pid>-<random>.tmp``: the writer's pid tells a leftover of a
#: killed process from a file another live process is writing.
TEMP_PREFIX = ".camcli-"
_TEMP_NAME = re.compile(re.escape(TEMP_PREFIX) + r"(\d+)-[^/]*\.tmp$")


def remove_stale_temporaries(folder: str) -> int:
    """Delete temporaries left in ``folder`` (recursively) by processes that no longer
    run; returns how many were removed."""
    removed = 0
    for root, _dirs, files in os.walk(folder):
        for name in files:
            match = _TEMP_NAME.match(name)
            if match and not _alive(int(match.group(1))):
                try:
                    os.unlink(os.path.join(root, name))
                    removed += 1
                except OSError:
                    pass
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def create_temporary(folder: str, prefix: str | None = None, suffix: str = ".tmp"
                     ) -> tuple[int, str]:
    """A new file in ``folder``, open for writing: ``(descriptor, path)``.

    Its name is ``prefix`` (default ``.camcli-<pid>-``), a random part and ``suffix``. It
    gets the mode ``open()`` gives a new file: 0666 less the umask, applied by the kernel
    (``tempfile.mkstemp`` makes 0600 files; reading the umask would mean changing it, which
    no library may do to its process).
    """
    prefix = f"{TEMP_PREFIX}{os.getpid()}-" if prefix is None else prefix
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    while True:
        path = os.path.join(folder, f"{prefix}{secrets.token_hex(8)}{suffix}")
        try:
            return os.open(path, flags, 0o666), path
        except FileExistsError:  # a name drawn twice: draw again
            continue


def write_atomic(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (fsync'd before the rename)."""
    folder = os.path.dirname(path) or "."
    os.makedirs(folder, exist_ok=True)
    fd, tmp = create_temporary(folder)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        reached("renaming")
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


@contextlib.contextmanager
def writing(path: str) -> Iterator[str]:
    """A file name to write ``path``'s new content to, for a library that writes by name
    (Keras' ``model.save``): ``<temporary folder beside path>/<path's name>``. When the
    block ends without an error the file is renamed to ``path`` (one filesystem: atomic);
    the temporary folder goes either way.
    """
    import shutil
    import tempfile

    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    scratch = tempfile.mkdtemp(dir=folder, prefix=f"{TEMP_PREFIX}{os.getpid()}-", suffix=".tmp")
    try:
        temporary = os.path.join(scratch, os.path.basename(path))
        yield temporary
        os.replace(temporary, path)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
