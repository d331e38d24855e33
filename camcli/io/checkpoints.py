"""Points where a test can pause a run, to kill or interrupt it there and nowhere else.

A test that kills a run after a random sleep proves nothing on a fast machine (the run
finished first) and fails on a slow one. Instead, a test starts camcli with
``CAMCLI_TEST_PAUSE=POINT:N:FOLDER``: the N-th time the process reaches `reached(POINT)`,
it creates ``FOLDER/paused`` and waits until ``FOLDER/resume`` exists. The test kills it
there (it never resumes), or signals it and then lets it go on. Without the variable,
which no user sets, `reached` is one dictionary look-up.

Points:

* ``recorded``: a job's records were appended to the manifest (`camcli.run.batch.Recorder`).
* ``renaming``: a file's temporary copy is complete and about to be renamed into place
  (`camcli.io.atomic.write_atomic`, in a writer thread).
* ``flushed``: a manifest part object was written whole to an object store
  (`camcli.io.remote.PartsAppender`).
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter

#: The environment variable that arms a pause: ``POINT:N:FOLDER``.
ENVIRONMENT = "CAMCLI_TEST_PAUSE"

_lock = threading.Lock()
_counts: Counter = Counter()


def reached(point: str) -> None:
    """Count a pass through ``point``; pause on the one the environment names."""
    setting = os.environ.get(ENVIRONMENT)
    if not setting:
        return
    name, count, folder = setting.split(":", 2)
    if name != point:
        return
    with _lock:
        _counts[point] += 1
        now = _counts[point]
    if now != int(count):
        return
    with open(os.path.join(folder, "paused"), "w") as marker:
        marker.write(f"{os.getpid()}\n")
    while not os.path.exists(os.path.join(folder, "resume")):
        time.sleep(0.01)
