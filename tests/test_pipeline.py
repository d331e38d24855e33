"""The shared pipeline and the batch runner as a library: per-input failures stay per input."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import gap_model, write_image

from camcli.compute.models import LoadedModel
from camcli.io import atomic, labels
from camcli.options import BatchOptions
from camcli.run import pipeline, render
from camcli.run.batch import run_batch
from camcli.run.session import Session


@pytest.fixture
def explainer(keras):
    model = gap_model(keras, size=16, classes=3, seed=2)
    loaded = LoadedModel("tiny", model, (16, 16), "scale01", labels.generic(3))
    return Session.create(loaded)


@pytest.fixture
def folder(tmp_path):
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        write_image(tmp_path / "in" / name)
    return tmp_path / "in"


def records(out):
    return [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]


def test_an_unexpected_decoder_failure_is_one_error_row(explainer, folder, tmp_path,
                                                        monkeypatch):
    real = pipeline.load_rgb

    def flaky(path, storage=None):
        if path.endswith("b.jpg"):
            raise RuntimeError("decoder exploded")
        return real(path, storage)

    monkeypatch.setattr(pipeline, "load_rgb", flaky)
    summary = run_batch([str(folder)], explainer, BatchOptions(out_dir=str(tmp_path / "o")))
    assert (summary.written, summary.failed) == (2, 1)
    errors = {r["input"].rsplit("/", 1)[-1]: r["error"] for r in records(tmp_path / "o")}
    assert errors == {"a.jpg": None, "b.jpg": "cannot decode (RuntimeError: decoder exploded)",
                      "c.jpg": None}


def test_a_rendering_failure_is_one_error_row(explainer, folder, tmp_path, monkeypatch):
    real = render.overlay
    calls = []

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise ValueError("bad colour")
        return real(*args, **kwargs)

    monkeypatch.setattr(render, "overlay", flaky)
    summary = run_batch([str(folder)], explainer,
                        BatchOptions(out_dir=str(tmp_path / "o"), workers=1))
    assert (summary.written, summary.failed) == (2, 1)
    failed = [r for r in records(tmp_path / "o") if r["error"]]
    picture = tmp_path / "o" / "b.jpg"
    assert failed[0]["error"] == f"cannot render {picture} (ValueError: bad colour)"
    assert failed[0]["output"] is None


def test_stream_keeps_input_order_across_batches(explainer, tmp_path):
    from camcli.io.inputs import discover

    for i in range(7):
        write_image(tmp_path / "s" / f"{i}.png", size=(20 + i, 20))
    (tmp_path / "s" / "3.png").write_bytes(b"")
    results = list(explainer.stream(discover([str(tmp_path / "s")]), batch_size=2))
    assert [r.input.relative for r in results] == [f"{i}.png" for i in range(7)]
    assert results[3].error == "empty file"
    assert all(r.maps[0].heatmap.shape == (16, 16) for i, r in enumerate(results) if i != 3)
    assert [r.image.shape[1] for i, r in enumerate(results) if i != 3] == [20, 21, 22, 24, 25, 26]
    assert np.allclose([r.probabilities.sum() for i, r in enumerate(results) if i != 3], 1.0)


def test_disk_full_stops_the_run_and_resume_finishes_it(explainer, tmp_path, monkeypatch):
    import errno

    from camcli.errors import OutputError

    for i in range(6):
        write_image(tmp_path / "in6" / f"{i}.jpg")
    out = tmp_path / "o"
    real, calls = atomic.write_atomic, []

    def filling_up(path, data):
        calls.append(path)
        if len(calls) > 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(path, data)

    monkeypatch.setattr(atomic, "write_atomic", filling_up)
    with pytest.raises(OutputError) as info:
        run_batch([str(tmp_path / "in6")], explainer, BatchOptions(out_dir=str(out), workers=1))
    assert str(info.value) == (
        f"cannot write to {out}: No space left on device. 2 inputs were written and recorded "
        "before it; run the same command again to resume")
    assert [r["error"] for r in records(out)] == [None, None]  # no error rows for the rest

    monkeypatch.setattr(atomic, "write_atomic", real)
    summary = run_batch([str(tmp_path / "in6")], explainer, BatchOptions(out_dir=str(out)))
    assert (summary.skipped, summary.written, summary.failed) == (2, 4, 0)
    assert sorted(p.name for p in out.glob("*.jpg")) == [f"{i}.jpg" for i in range(6)]


def test_shards_partition_the_inputs_and_keep_name_collisions_together():
    from camcli.run.batch import in_shard

    names = [f"class_{c}/img_{i:04d}.jpg" for c in range(5) for i in range(200)]
    owners = [[k for k in range(1, 5) if in_shard(n, (k, 4))] for n in names]
    assert all(len(o) == 1 for o in owners)  # every input in exactly one shard
    sizes = [sum(o == [k] for o in owners) for k in range(1, 5)]
    assert min(sizes) > 200 and max(sizes) < 300  # roughly even
    for k in range(1, 8):
        assert in_shard("a/x.png", (k, 7)) == in_shard("a/x.jpg", (k, 7))
    assert in_shard("anything.jpg", None)
