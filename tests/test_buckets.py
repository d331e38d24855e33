"""Datasets and runs in object stores: ``s3://`` against moto's real S3 API over HTTP
(`conftest.s3_server`), and the choice of back end for the other schemes."""

from __future__ import annotations

import json
import sys

import pytest
from conftest import run, write_image

from camcli import storage
from camcli.errors import UsageProblem


def put_tree(local, url):
    """Upload a local folder to ``url`` (a bucket prefix), as a user would."""
    import fsspec

    fs = fsspec.filesystem("s3")
    for path in sorted(local.rglob("*")):
        if path.is_file():
            fs.put_file(str(path), f"{url[len('s3://'):]}/{path.relative_to(local).as_posix()}")


def objects(url):
    import fsspec

    return sorted(fsspec.filesystem("s3").find(url[len("s3://"):]))


def records_of(out):
    """The manifest's records (all parts), by input relative to its tree, with the
    fields that do not depend on where the run was."""
    from camcli.manifest import latest

    found = {}
    for path, group in latest(out).items():
        for record in group.in_rank_order():
            name = path.split("/tree/", 1)[1]
            found[name] = (record.output, record.map, record.class_index, record.label,
                           record.score, record.top, record.peak, record.error,
                           record.request.method, record.request.target)
    return found


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "tree"
    write_image(root / "red.jpg", size=(64, 48), color=(220, 20, 20))
    write_image(root / "sub" / "green.png", size=(50, 70), color=(20, 220, 20))
    write_image(root / "sub" / "deep" / "blue.jpeg", size=(33, 33), color=(20, 20, 220))
    (root / "sub" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (root / "notes.txt").write_text("not an image")
    return root


def test_a_tree_in_a_bucket_gives_the_local_records(tree, tmp_path, bucket, model_args):
    put_tree(tree, f"{bucket}/tree")
    local = run(["batch", str(tree), "--out", str(tmp_path / "out"), "--save-maps",
                 *model_args])
    remote = run(["batch", f"{bucket}/tree", "--out", f"{bucket}/out", "--save-maps",
                  *model_args])
    assert local.exit_code == remote.exit_code == 1, remote.output  # the broken file
    assert "4 inputs: 3 written, 0 already done, 1 failed" in remote.stderr
    mine = records_of(f"{bucket}/out")
    assert mine == records_of(str(tmp_path / "out"))
    assert len(mine) == 4
    names = objects(f"{bucket}/out")
    assert {n.split("/out/", 1)[1] for n in names if not n.split("/out/", 1)[1].startswith(
        "manifest/")} == {"red.jpg", "red.npy", "sub/green.jpg", "sub/green.npy",
                          "sub/deep/blue.jpg", "sub/deep/blue.npy"}
    parts = [n for n in names if "/out/manifest/part-" in n]
    assert len(parts) == 1  # one flush at the end of a small run

    again = run(["batch", f"{bucket}/tree", "--out", f"{bucket}/out", "--save-maps",
                 *model_args])
    assert "4 inputs: 0 written, 3 already done, 1 failed" in again.stderr
    added = sorted(set(objects(f"{bucket}/out")) - set(names))
    assert len(added) == 1 and "/out/manifest/part-" in added[0]  # the failure, again


def test_out_in_a_bucket_with_inputs_on_disk_and_the_reverse(tree, tmp_path, bucket,
                                                             model_args):
    up = run(["batch", str(tree / "red.jpg"), str(tree / "sub" / "green.png"), "--out",
              f"{bucket}/up", *model_args])
    assert up.exit_code == 0, up.output
    assert [r["input"] for r in _manifest_lines(f"{bucket}/up")] == [
        str(tree / "red.jpg"), str(tree / "sub" / "green.png")]
    before = objects(f"{bucket}/up")
    again = run(["batch", str(tree / "red.jpg"), str(tree / "sub" / "green.png"), "--out",
                 f"{bucket}/up", *model_args])
    assert "2 inputs: 0 written, 2 already done, 0 failed" in again.stderr
    assert objects(f"{bucket}/up") == before  # a rerun writes nothing, not even a part
    put_tree(tree, f"{bucket}/tree")
    down = run(["batch", f"{bucket}/tree/red.jpg", f"{bucket}/tree/sub", "--out",
                str(tmp_path / "down"), *model_args])
    assert down.exit_code == 1, down.output  # sub/broken.jpg
    lines = [json.loads(line) for line in
             (tmp_path / "down" / "manifest.jsonl").read_text().splitlines()]
    # In the order of a local walk: a folder's files, then its subfolders.
    assert [(r["input"], r["output"]) for r in lines] == [
        (f"{bucket}/tree/red.jpg", "red.jpg"),
        (f"{bucket}/tree/sub/broken.jpg", None),
        (f"{bucket}/tree/sub/green.png", "sub/green.jpg"),
        (f"{bucket}/tree/sub/deep/blue.jpeg", "sub/deep/blue.jpg")]
    assert (tmp_path / "down" / "sub" / "deep" / "blue.jpg").is_file()


def _manifest_lines(url):
    import fsspec

    fs = fsspec.filesystem("s3")
    lines = []
    for part in sorted(fs.glob(f"{url[len('s3://'):]}/manifest/part-*.jsonl")):
        lines += [json.loads(line) for line in fs.cat(part).decode().splitlines()]
    return lines


def test_missing_inputs_and_buckets_are_one_line(bucket, tmp_path, model_args):
    gone = run(["batch", f"{bucket}/nothing-here", "--out", str(tmp_path / "o"), *model_args])
    assert gone.exit_code == 2
    assert gone.stderr.strip().splitlines()[-1] == (
        f"Error: {bucket}/nothing-here: no such file or directory")


def test_each_scheme_gets_its_fsspec_back_end(monkeypatch):
    pytest.importorskip("s3fs")
    import s3fs

    assert isinstance(storage.store_for("s3://b/x").fs, s3fs.S3FileSystem)
    assert storage.store_for("/tmp/x") is storage.store_for("file:///tmp/x")
    for url, module, extra in (("gs://b/x", "gcsfs", "gcs"), ("az://c/x", "adlfs", "azure"),
                               ("s3://b/x", "s3fs", "s3")):
        monkeypatch.setitem(sys.modules, module, None)  # as if not installed
        storage.configure({})
        with pytest.raises(UsageProblem) as caught:
            storage.store_for(url)
        assert str(caught.value) == (
            f"{url}: {url.split(':')[0]}:// needs {module}, which is not installed: "
            f"pip install 'camcli[{extra}]'")
    storage.configure({})


def test_locations_of_both_kinds():
    assert storage.absolute("s3://b/a/../x//y/") == "s3://b/x/y"
    assert storage.join("s3://b/out", "a", "x.jpg") == "s3://b/out/a/x.jpg"
    assert storage.dirname("s3://b/out/x.jpg") == "s3://b/out"
    assert storage.relative("s3://b/tree/a/x.jpg", "s3://b/tree") == "a/x.jpg"
    assert storage.scheme("file:///tmp/x") is None and storage.scheme("C:/x") is None
    assert storage.inside("s3://b/out/x", "s3://b/out") and \
        not storage.inside("s3://b/outer/x", "s3://b/out")
