"""Datasets and runs in object stores: ``s3://`` against moto's real S3 API over HTTP
(`conftest.s3_server`), and the choice of back end for the other schemes."""

from __future__ import annotations

import json
import sys

import pytest
from conftest import run, write_image

from camcli.errors import UsageProblem
from camcli.io import locations, remote
from camcli.io.storage import Storage


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
    from camcli.records.manifest import latest

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
    return bucket_tree(tmp_path)


def bucket_tree(tmp_path):
    """Three images in nested folders, a broken one and a text file."""
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
    # camcli audit reads a run in a bucket (and writes its audit and report there)
    audits = [run(["audit", out, "--min-images", "2", "--format", "json"])
              for out in (str(tmp_path / "out"), f"{bucket}/out")]
    assert [a.exit_code for a in audits] == [0, 0], audits[1].output
    found = [[(c["class"], c["skipped"], [(k["size"], sorted(m.rsplit("/tree/", 1)[1]
                                                            for m in k["members"]))
                                          for k in c["clusters"]])
              for c in json.loads(a.stdout)["classes"]] for a in audits]
    assert found[0] == found[1]
    assert {"audit.json", "index.html"} <= {n.split("/out/", 1)[1]
                                            for n in objects(f"{bucket}/out")}
    names = objects(f"{bucket}/out")

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

    assert isinstance(Storage().store("s3://b/x").fs, s3fs.S3FileSystem)
    from fsspec.registry import known_implementations

    for scheme_, implementation in (("gs", "gcsfs.GCSFileSystem"),
                                    ("az", "adlfs.AzureBlobFileSystem")):
        assert remote.EXTRAS[scheme_][0] == implementation.split(".")[0]
        assert known_implementations[scheme_]["class"] == implementation
        try:  # installed here (camcli[gcs], camcli[azure]): the store is that class
            module = __import__(implementation.split(".")[0])
        except ImportError:
            continue
        import fsspec  # the class (an instance would look for Google's credentials)

        assert issubclass(fsspec.get_filesystem_class(scheme_),
                          getattr(module, implementation.split(".")[1]))
    assert Storage().store("/tmp/x") is Storage().store("file:///tmp/x")
    for url, module, extra in (("gs://b/x", "gcsfs", "gcs"), ("az://c/x", "adlfs", "azure"),
                               ("s3://b/x", "s3fs", "s3")):
        monkeypatch.setitem(sys.modules, module, None)  # as if not installed
        with pytest.raises(UsageProblem) as caught:
            Storage().store(url)
        assert str(caught.value) == (
            f"{url}: {url.split(':')[0]}:// needs {module}, which is not installed: "
            f"pip install 'camcli[{extra}]'")


def test_locations_of_both_kinds():
    assert locations.absolute("s3://b/a/../x//y/") == "s3://b/a/../x//y"  # keys are literal
    assert locations.relative("s3://b/tree/../up.png", "s3://b/tree") == "%2E%2E/up.png"
    assert locations.relative("s3://b/tree//x/./y.png", "s3://b/tree/") == "%2F/x/%2E/y.png"
    assert locations.join("s3://b/out/", "x", "y.jpg") == "s3://b/out/x/y.jpg"
    assert locations.join("s3://b/tree", "/lead.png") == "s3://b/tree//lead.png"  # literal
    assert locations.join("s3://b/out", "a", "x.jpg") == "s3://b/out/a/x.jpg"
    assert locations.dirname("s3://b/out/x.jpg") == "s3://b/out"
    assert locations.relative("s3://b/tree/a/x.jpg", "s3://b/tree") == "a/x.jpg"
    assert locations.scheme("file:///tmp/x") is None and locations.scheme("C:/x") is None
    assert locations.inside("s3://b/out/x", "s3://b/out") and \
        not locations.inside("s3://b/outer/x", "s3://b/out")


@pytest.mark.parametrize("point, count, flushed", [
    ("flushed", 2, 6),    # killed right after its 2nd part (3 records each) was written
    ("recorded", 8, 6),   # after its 8th record: 2 parts written, 2 records not flushed
])
def test_sigkill_then_rerun_records_every_input_exactly_once(tmp_path, bucket, model_args,
                                                             point, count, flushed):
    """Parts are whole objects: a killed run loses only its unflushed records (their
    inputs are redone); nothing is recorded twice, nothing torn."""
    import os
    import signal
    import subprocess

    from conftest import Paused

    photos = tmp_path / "photos"
    for i in range(14):
        write_image(photos / f"d{i % 3}" / f"{i:03d}.png", size=(40 + i % 5, 30))
    put_tree(photos, f"{bucket}/tree")
    command = [sys.executable, "-m", "camcli", "batch", f"{bucket}/tree", "--out",
               f"{bucket}/out", "--batch-size", "2", "-q", *model_args]
    env = dict(os.environ, CAMCLI_PART_RECORDS="3")
    run_ = Paused(command, point, count, tmp_path / "pause", env=env,
                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    run_.wait()
    run_.process.send_signal(signal.SIGKILL)
    run_.process.wait()
    lines = _manifest_lines(f"{bucket}/out")
    assert len(lines) == flushed  # what was flushed survives, nothing else
    assert len({line["input"] for line in lines}) == flushed

    again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    assert f"14 inputs: {14 - flushed} written, {flushed} already done" in again.stderr
    lines = _manifest_lines(f"{bucket}/out")
    inputs = [line["input"] for line in lines]
    assert len(inputs) == len(set(inputs)) == 14  # every input exactly once
    assert all(line["error"] is None for line in lines)


def test_report_score_model_and_labels_from_a_bucket(tree, tmp_path, bucket, model_args,
                                                     model_files):
    import fsspec

    fs = fsspec.filesystem("s3")
    put_tree(tree, f"{bucket}/tree")
    fs.put_file(model_files["gap"], f"{bucket[5:]}/models/gap.keras")
    fs.put_file(model_files["labels"], f"{bucket[5:]}/models/labels.txt")
    args = ["--model", f"{bucket}/models/gap.keras", "--labels",
            f"{bucket}/models/labels.txt", "--preprocess", "scale01", "--device", "cpu"]
    result = run(["batch", f"{bucket}/tree/red.jpg", f"{bucket}/tree/sub/green.png", "--out",
                  f"{bucket}/run", "--save-maps", *args])
    assert result.exit_code == 0, result.output
    lines = _manifest_lines(f"{bucket}/run")
    assert {line["model"] for line in lines} == {f"{bucket}/models/gap.keras"}
    local = run(["batch", str(tree / "red.jpg"), str(tree / "sub" / "green.png"), "--out",
                 str(tmp_path / "local"), "--save-maps", *model_args])
    assert local.exit_code == 0
    local_lines = [json.loads(x) for x in (tmp_path / "local" / "manifest.jsonl").read_text()
                   .splitlines()]
    assert [(x["label"], x["score"], x["top"]) for x in lines] == \
        [(x["label"], x["score"], x["top"]) for x in local_lines]  # the same model

    report = run(["report", f"{bucket}/run"])
    assert report.exit_code == 0, report.output
    page = fs.cat(f"{bucket[5:]}/run/index.html").decode()
    assert '".thumbnails/red.overlay.jpg"' in page  # relative links: works synced down
    assert "src=\"s3://" not in page and "href=\"s3://" not in page
    assert fs.isfile(f"{bucket[5:]}/run/.thumbnails/red.overlay.jpg")

    fs.pipe(f"{bucket[5:]}/truth.csv",
            b"input,class,x0,y0,x1,y1\nred.jpg,red thing,0,0,64,48\n"
            b"green.png,green thing,0,0,50,70\n")
    scored = run(["score", f"{bucket}/run", "--truth", f"{bucket}/truth.csv", "--labels",
                  f"{bucket}/models/labels.txt", "--format", "json"])
    assert scored.exit_code == 0, scored.output
    overall = json.loads(scored.stdout)["overall"]
    # the maps of the true classes (where the top class was right) read from the bucket
    assert overall["pairs"] == 2 and overall["mapped"] == overall["pointed"] >= 1


def test_an_output_bucket_that_does_not_exist_is_one_line(tree, bucket, model_args):
    result = run(["batch", str(tree / "red.jpg"), "--out", "s3://no-such-bucket-here/out",
                  *model_args])
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "Error: s3://no-such-bucket-here/out: the bucket (or container) does not exist")


def test_store_refusals_are_named_without_secrets():
    from camcli.io.remote import _unreachable

    class NoCredentialsError(Exception):
        pass

    assert str(_unreachable("s3://b/x", PermissionError("Access Denied"))) == (
        "s3://b/x: access denied: check the credentials and the bucket's policy")
    assert str(_unreachable("s3://b/x", NoCredentialsError("Unable to locate"))).startswith(
        "s3://b/x: no credentials found")
    secret = {"key": "AKIA-SECRET", "secret": "hush"}
    assert "SECRET" not in repr(remote.FsspecStore("s3", secret))
    settings = Storage(secret)
    assert "SECRET" not in repr(settings) and "hush" not in repr(settings)


def test_odd_object_names_stay_under_the_output_prefix(tmp_path, bucket, model_args):
    """Keys with spaces, non-ASCII, '..', '.' or an empty segment are objects like any
    other: read as they are, and their pictures written under --out."""
    import fsspec

    fs = fsspec.filesystem("s3")
    image = write_image(tmp_path / "x.png", size=(40, 30)).read_bytes()
    keys = ["a b.png", "ünï.png", "../up.png", "./dot.png", "/lead.png"]
    for key in keys:
        fs.pipe(f"{bucket[5:]}/tree/{key}", image)
    result = run(["batch", f"{bucket}/tree", "--out", f"{bucket}/out", *model_args])
    assert result.exit_code == 0, result.output
    written = sorted(n.split("/out/", 1)[1] for n in objects(f"{bucket}/out")
                     if "/manifest/" not in n)
    assert written == sorted(["a b.jpg", "ünï.jpg", "%2E%2E/up.jpg", "%2E/dot.jpg",
                              "%2F/lead.jpg"])
    assert all(n.startswith(f"{bucket[5:]}/out/") for n in objects(f"{bucket}/out"))
    lines = _manifest_lines(f"{bucket}/out")
    assert sorted(line["input"] for line in lines) == sorted(f"{bucket}/tree/{k}" for k in keys)
    again = run(["batch", f"{bucket}/tree", "--out", f"{bucket}/out", *model_args])
    assert "5 inputs: 0 written, 5 already done, 0 failed" in again.stderr


class FaultyProxy:
    """A small HTTP proxy in front of moto that answers 503 (SlowDown) to GETs of keys
    containing ``flaky`` the first ``flaky_times`` times, and always to keys containing
    ``doomed``: transient and lasting server errors, over real HTTP."""

    def __init__(self, upstream: str, flaky_times: int = 2):
        import http.client
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
        from urllib.parse import urlsplit

        target = urlsplit(upstream)
        self.counts: dict[str, int] = {}
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _forward(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.command == "GET" and ("doomed" in self.path or (
                        "flaky" in self.path
                        and proxy.counts.setdefault(self.path, 0) < flaky_times)):
                    proxy.counts[self.path] = proxy.counts.get(self.path, 0) + 1
                    message = (b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>SlowDown"
                               b"</Code><Message>Please reduce your request rate.</Message>"
                               b"</Error>")
                    self.send_response(503)
                    self.send_header("Content-Length", str(len(message)))
                    self.end_headers()
                    self.wfile.write(message)
                    return
                connection = http.client.HTTPConnection(target.hostname, target.port)
                connection.request(self.command, self.path, body=body,
                                   headers=dict(self.headers))
                answer = connection.getresponse()
                data = answer.read()
                self.send_response(answer.status)
                for key, value in answer.getheaders():
                    if key.lower() not in ("content-length", "transfer-encoding", "connection"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                connection.close()

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _forward

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def test_transient_errors_are_retried_and_a_lasting_one_fails_one_input(
        tmp_path, bucket, model_args, s3_server, monkeypatch):
    import fsspec

    fs = fsspec.filesystem("s3")
    image = write_image(tmp_path / "x.png", size=(40, 30)).read_bytes()
    for key in ("fine.png", "flaky.png", "doomed.png"):
        fs.pipe(f"{bucket[5:]}/tree/{key}", image)
    proxy = FaultyProxy(s3_server)
    try:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
        monkeypatch.setenv("AWS_MAX_ATTEMPTS", "2")  # botocore's own retries, then s3fs's
        result = run(["batch", f"{bucket}/tree", "--out", str(tmp_path / "out"),
                      *model_args])
    finally:
        monkeypatch.undo()
        proxy.close()
    assert result.exit_code == 1, result.output  # the lasting one
    lines = {json.loads(x)["input"].rsplit("/", 1)[1]: json.loads(x) for x in
             (tmp_path / "out" / "manifest.jsonl").read_text().splitlines()}
    assert lines["fine.png"]["error"] is None and lines["flaky.png"]["error"] is None
    assert lines["doomed.png"]["output"] is None
    assert lines["doomed.png"]["error"] == "cannot read it (Please reduce your request rate.)"
    flaky = [count for path, count in proxy.counts.items() if "flaky" in path]
    assert flaky and max(flaky) == 2  # retried past two 503s


def test_the_other_commands_take_urls(tree, tmp_path, bucket, model_args):
    import fsspec

    fs = fsspec.filesystem("s3")
    put_tree(tree, f"{bucket}/tree")
    predicted = run(["predict", f"{bucket}/tree/red.jpg", "--format", "json", *model_args])
    assert predicted.exit_code == 0, predicted.output
    assert json.loads(predicted.stdout)[0]["input"] == f"{bucket}/tree/red.jpg"
    explained = run(["explain", "--method", "layercam", f"{bucket}/tree/red.jpg", "--out",
                     f"{bucket}/single", *model_args])
    assert explained.exit_code == 0, explained.output
    assert fs.isfile(f"{bucket[5:]}/single/red_layercam.jpg")
    fs.pipe(f"{bucket[5:]}/classes.csv", b"input,class\nred.jpg,green thing\n")
    asked = run(["batch", f"{bucket}/tree/red.jpg", "--out", str(tmp_path / "c"),
                 "--class-from", f"{bucket}/classes.csv", *model_args])
    assert asked.exit_code == 0, asked.output
    record = json.loads((tmp_path / "c" / "manifest.jsonl").read_text().splitlines()[0])
    assert (record["label"], record["class_source"]) == ("green thing", "file")
    refused = run(["train", f"{bucket}/tree", "-o", str(tmp_path / "m.keras")])
    assert refused.exit_code == 2  # listed through the store: one class folder ("sub")
    assert refused.stderr.strip().splitlines()[-1] == (
        f"Error: {bucket}/tree has 1 class folder(s) with images: training needs at least "
        "two (one sub-folder per class)")


def test_storage_options_are_key_value_pairs_handed_down_as_a_value(monkeypatch, tmp_path):
    """--storage-option before and after the command's name both count (the later wins),
    and the command hands them down as one Storage value; nothing global is set."""
    seen = []

    def build_report(out_dir, workers=2, storage=None):
        seen.append(storage)
        raise UsageProblem("stopped here")

    monkeypatch.setattr("camcli.analysis.report.build_report", build_report)
    result = run(["--storage-option", "anon=false", "report", str(tmp_path),
                  "--storage-option", "requester_pays=true", "--storage-option", "anon=true"])
    assert result.exit_code == 2 and "stopped here" in result.stderr
    assert seen[0].options == {"anon": "true", "requester_pays": "true"}
    assert run(["report", str(tmp_path)]).exit_code == 2
    assert seen[1].options == {}  # the next command starts afresh
    bad = run(["methods", "--storage-option", "anon"])
    assert bad.exit_code == 2
    assert "Invalid value for '--storage-option': 'anon' is not KEY=VALUE" in bad.stderr


def test_storage_travels_by_pickle_with_its_settings_only():
    import pickle

    settings = Storage({"anon": "true"}, part_records=7)
    assert settings.store("s3://b/x") is settings.store("s3://b/y")  # one store a scheme
    copy = pickle.loads(pickle.dumps(settings))
    assert (copy.options, copy.part_records) == ({"anon": "true"}, 7) and copy == settings
    assert copy.store("s3://b/x") is not settings.store("s3://b/x")  # made where it is used
    assert copy.store("s3://b/x").part_records == 7


@pytest.mark.parametrize("value", ["0", "-3", "x", "2.5"])
def test_part_records_from_the_environment_are_checked(value, tmp_path, monkeypatch):
    monkeypatch.setenv("CAMCLI_PART_RECORDS", value)
    result = run(["report", str(tmp_path)])
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines()[-1] == (
        f"Error: CAMCLI_PART_RECORDS={value!r}: give a whole number of records per manifest "
        "part, at least 1 (default 256)")
    assert Storage.from_settings(environ={"CAMCLI_PART_RECORDS": "3"}).part_records == 3

