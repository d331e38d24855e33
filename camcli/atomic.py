"""Atomic file writing: a temporary file in the target folder, then a rename.

A reader (or a crash) sees either no file, the previous file, or the complete new one —
never a truncated file.
"""

from __future__ import annotations

import os
import tempfile


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


#: The mode open() would give a new file; mkstemp's temporaries are 0600.
FILE_MODE = 0o666 & ~_current_umask()


def write_atomic(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (fsync'd before the rename)."""
    folder = os.path.dirname(path) or "."
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".camcli-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), FILE_MODE)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
