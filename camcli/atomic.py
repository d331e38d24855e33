"""Atomic file writing: a temporary file in the target folder, then a rename.

A reader (or a crash) sees either no file, the previous file, or the complete new one —
never a truncated file.
"""

from __future__ import annotations

import os
import re
import tempfile

from camcli.checkpoints import reached


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


#: The mode open() would give a new file; mkstemp's temporaries are 0600.
FILE_MODE = 0o666 & ~_current_umask()

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


def write_atomic(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (fsync'd before the rename)."""
    folder = os.path.dirname(path) or "."
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f"{TEMP_PREFIX}{os.getpid()}-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), FILE_MODE)
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
