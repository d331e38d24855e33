"""Storage: the data camcli reads and writes goes through `camcli.io.storage`, and only there,
so a new back end is one place to change."""

from __future__ import annotations

import os
import re

import pytest
from conftest import REPO

from camcli.io.local import NotARegularFile
from camcli.io.storage import Storage

#: Calls that touch the filesystem directly (``def open(`` is `camcli.open`, no call).
RAW_IO = re.compile(r"(?<![.\w])(?<!def )open\(|os\.walk|glob\.glob|os\.path\.(isfile|isdir|"
                    r"lexists|exists|getmtime)\(|os\.(stat|replace|unlink|makedirs|listdir|"
                    r"scandir|remove|rename|open|write)\(|tempfile\.")

#: Where that is allowed: the stores themselves and their whole writes; the test pause
#: hook; the machine's own facts; model files and the weights cache (Keras' business, local
#: by design). Nothing else: the trained model too is written through its store.
ALLOWED = {"camcli/io/local.py": None, "camcli/io/remote.py": None,
           "camcli/io/atomic.py": None, "camcli/io/checkpoints.py": None,
           "camcli/compute/backend.py": None}


def test_only_the_store_touches_the_filesystem():
    offenders = []
    for path in sorted((REPO / "camcli").rglob("*.py")):
        name = path.relative_to(REPO).as_posix()
        if name.startswith("camcli/compute/models/") or name in ALLOWED:
            continue
        source = path.read_text(encoding="utf-8")
        lines = source.splitlines()
        offenders += [f"{name}:{number}: {line.strip()}"
                      for number, line in enumerate(lines, 1) if RAW_IO.search(line)]
    assert not offenders, "\n".join(offenders)


def test_the_local_store_reads_regular_files_only(tmp_path):
    store = Storage().store(str(tmp_path))
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    with pytest.raises(NotARegularFile):  # opening a FIFO to read would block for ever
        store.open(str(fifo))
    with pytest.raises(ValueError, match="to read only"):
        store.open(str(tmp_path / "x"), "wb")


def test_whole_writes_and_appends(tmp_path):
    store = Storage().store(str(tmp_path))
    target = tmp_path / "sub" / "a.bin"  # its folder is made as it is written
    store.write_atomic(str(target), b"first")
    store.write_atomic(str(target), b"second")
    with store.open(str(target)) as f:
        assert f.read() == b"second"
    assert not [p for p in target.parent.iterdir() if p.name != "a.bin"]  # no temporary
    log = tmp_path / "log.jsonl"
    log.write_bytes(b'{"a": 1}\n{"b"')  # a line torn by a killed writer
    appender = store.appender(str(log))
    assert not appender.ends_cleanly()
    appender.append(b"\n")
    appender.append(b'{"c": 3}\n')
    appender.close()
    assert log.read_bytes() == b'{"a": 1}\n{"b"\n{"c": 3}\n'
    assert store.glob(str(tmp_path / "*.jsonl")) == [str(log)]
