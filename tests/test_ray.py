"""``batch --engine ray``: the same records as the local engine, input by input; resume after
the driver is killed; a batch lost for good is redone next time; a cluster joined with
--ray-address; a clear error without the extra."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import REPO, SAMPLES, Paused, free_port, run, write_image
from PIL import Image

pytest.importorskip("ray", reason="Ray is not installed: pip install 'camcli[ray]'")

TINY = ["--preprocess", "scale01", "--device", "cpu"]


@pytest.fixture
def tree(tmp_path):
    """The sample photos, a generated tree with sub-folders, and a corrupt file."""
    root = tmp_path / "tree"
    shutil.copytree(SAMPLES, root / "samples", ignore=shutil.ignore_patterns("*.md"))
    for i in range(9):  # folders named like the tiny model's classes, for --class-from
        folder = ("red thing", "green_thing", "Blue-Thing")[i % 3]
        write_image(root / "gen" / folder / f"{i}.png", size=(40 + 3 * i, 30 + i),
                    color=(25 * i, 200 - 20 * i, 90))
    (root / "gen" / "green_thing" / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    return root


def records(out) -> dict:
    rows = []
    for part in sorted(out.glob("manifest*.jsonl")):
        rows += [json.loads(line) for line in part.read_text(encoding="utf-8").splitlines()]
    keyed = {(r["input"], r["rank"]): r for r in rows}
    assert len(keyed) == len(rows), "an input was recorded twice"
    return keyed


def assert_same_records(local, ray_out):
    mine, theirs = records(local), records(ray_out)
    assert mine.keys() == theirs.keys()
    for key, want in mine.items():
        got = theirs[key]
        for field in ("schema", "output", "map", "model", "layer", "method", "target",
                      "requested_class", "class_index", "label", "error", "precision"):
            assert got[field] == want[field], (key, field)
        if want["error"] is None:
            assert got["score"] == pytest.approx(want["score"], abs=1e-5), key
            assert [c for c, _, _ in got["top"]] == [c for c, _, _ in want["top"]], key
            assert np.allclose([p for *_, p in got["top"]], [p for *_, p in want["top"]],
                               atol=1e-5)
            with Image.open(local / want["output"]) as a, \
                    Image.open(ray_out / got["output"]) as b:
                difference = np.abs(np.asarray(a, int) - np.asarray(b, int))
            assert difference.max() <= 1, key
            if want["map"]:
                assert np.allclose(np.load(local / want["map"]), np.load(ray_out / got["map"]),
                                   atol=1e-5)
            if want["metrics"]:
                assert got["metrics"] == pytest.approx(want["metrics"], abs=1e-4)
    return mine


def test_the_ray_engine_writes_what_the_local_engine_writes(ray_cluster, tree, tmp_path):
    args = ["batch", str(tree), "--save-maps", "--batch-size", "4", "-q", "--device", "cpu"]
    local = run([*args, "--out", str(tmp_path / "local")])
    ray = run([*args, "--out", str(tmp_path / "ray"), "--engine", "ray"])
    assert local.exit_code == ray.exit_code == 1  # the corrupt file, in both
    assert "16 inputs: 15 written, 0 already done, 1 failed" in ray.stderr
    mine = assert_same_records(tmp_path / "local", tmp_path / "ray")
    assert len(mine) == 16 and sum(1 for r in mine.values() if r["error"]) == 1
    again = run([*args, "--out", str(tmp_path / "ray"), "--engine", "ray"])
    assert "16 inputs: 0 written, 15 already done, 1 failed" in again.stderr
    # camcli audit reads a Ray run as it reads a local one
    audits = [run(["audit", str(tmp_path / engine), "--min-images", "2", "--format", "json",
                   "--no-report"]) for engine in ("local", "ray")]
    assert [a.exit_code for a in audits] == [0, 0], audits[1].output
    found = [[(c["class"], c["images"], c["skipped"], [(k["size"], sorted(k["members"]))
                                                       for k in c["clusters"]])
              for c in json.loads(a.stdout)["classes"]] for a in audits]
    assert found[0] == found[1] and sum(c[1] for c in found[0]) == 15
    assert any(c[3] for c in found[0])  # at least one class was clustered


@pytest.mark.parametrize("extra", [
    ["--method", "scorecam", "--max-maps", "8", "--top-k-maps", "2"],
    ["--method", "gradcam++", "--class", "green thing", "--metrics", "--metric-steps", "2",
     "--panel", "--shard", "2/2"],
    ["--class-from", "folder", "--top-k-maps", "1"],
    ["--method", "ablationcam", "--max-maps", "3", "--smooth", "aug", "--metrics", "road"],
])
def test_options_mean_the_same_on_ray(ray_cluster, tree, tmp_path, model_files, extra):
    args = ["batch", str(tree / "gen"), "-q", "--model", model_files["gap"], "--labels",
            model_files["labels"], *TINY, *extra]
    local = run([*args, "--out", str(tmp_path / "local")])
    result = run([*args, "--out", str(tmp_path / "ray"), "--engine", "ray"])
    mine = assert_same_records(tmp_path / "local", tmp_path / "ray")
    failed = any(record["error"] for record in mine.values())  # the corrupt file, if asked
    assert local.exit_code == result.exit_code == int(failed), result.output


def test_resume_after_the_driver_is_killed(ray_cluster, tmp_path, model_files):
    photos = tmp_path / "many"
    for i in range(120):
        write_image(photos / f"d{i % 4}" / f"{i:03d}.png", size=(40 + i % 7, 30))
    out = tmp_path / "out"
    args = ["batch", str(photos), "--out", str(out), "--batch-size", "2", "-q", "--engine",
            "ray", "--model", model_files["gap"], *TINY]
    # Killed right after its 10th record: mid-run, whatever the machine's speed.
    driver = Paused([sys.executable, "-m", "camcli", *args, "--ray-address", ray_cluster],
                    "recorded", 10, tmp_path / "pause", cwd=REPO, stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL)
    driver.wait()
    driver.process.send_signal(signal.SIGKILL)
    driver.process.wait()
    before = len(records(out))
    assert before == 10  # only the driver appends, and it stopped at its 10th

    resumed = run(args)
    assert resumed.exit_code == 0, resumed.output
    assert f"120 inputs: {120 - before} written, {before} already done" in resumed.stderr
    assert len(records(out)) == 120  # every input exactly once
    assert "0 written, 120 already done" in run(args).stderr


CRASHER = '''
import importlib.abc, importlib.machinery, os, sys

class Patch(importlib.abc.MetaPathFinder):
    """When camcli.run.batch is imported, make its Executor kill the process on 'crash' files."""

    def find_spec(self, name, path, target=None):
        if name != "camcli.run.batch":
            return None
        sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        load = spec.loader.exec_module

        def exec_module(module):
            load(module)
            write = module.Executor._write

            def crashing(self, job, *rest):
                if "crash" in job.item.path:
                    os._exit(3)  # as a segfaulting decoder would
                write(self, job, *rest)

            module.Executor._write = crashing

        spec.loader.exec_module = exec_module
        return spec

sys.meta_path.insert(0, Patch())
'''


def test_a_batch_lost_for_good_is_counted_and_redone(ray_cluster, tmp_path, model_files):
    photos = tmp_path / "in"
    for i in range(12):
        write_image(photos / f"{i:02d}.png", size=(36, 30))
    write_image(photos / "05crash.png", size=(36, 30))  # in the batch of 04, 05, 05crash...
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(CRASHER)
    out = tmp_path / "out"
    args = ["batch", str(photos), "--out", str(out), "--batch-size", "1", "--engine", "ray",
            "--model", model_files["gap"], *TINY]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(hooks), str(REPO)]),
               RAY_ADDRESS="local")  # its own Ray, whose workers inherit the hook
    done = subprocess.run([sys.executable, "-m", "camcli", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stderr[-3000:]
    # CALL_BATCHES images go to an actor at once: the crashing call's are all lost, and a
    # call queued on the same actor may die with it every time (how many depends on Ray's
    # scheduling, so the test asserts what holds whatever it is).
    found = re.search(r"13 inputs: (\d+) written, 0 already done, 0 failed, (\d+) not done "
                      r"\(run again\)", done.stderr)
    assert found, done.stderr[-3000:]
    lost = int(found.group(2))
    assert 1 <= lost < 13 and int(found.group(1)) == 13 - lost, found.group(0)
    assert "not done (their worker kept failing): " in done.stderr
    assert str(photos / "05crash.png") not in {key for key, _ in records(out)}

    resumed = run(args)  # without the hook: the lost ones are done now
    assert f"13 inputs: {lost} written, {13 - lost} already done" in resumed.stderr
    assert len(records(out)) == 13


def test_a_cluster_started_with_ray_start_is_joined(ray_cluster, tmp_path, model_files):
    import ray

    ray_command = shutil.which("ray", path=os.path.dirname(sys.executable))
    port, host = free_port(), ray.util.get_node_ip_address()  # where Ray's GCS listens
    # Token authentication, as Ray recommends; a client joining by address must say so.
    secured = dict(os.environ, RAY_AUTH_MODE="token")
    head = subprocess.Popen([ray_command, "start", "--head", "--block", "--port", str(port),
                             "--num-cpus", "1", "--object-store-memory", str(100 * 2 ** 20),
                             "--include-dashboard", "false", "--disable-usage-stats"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True, env=secured)
    try:
        for i in range(3):
            write_image(tmp_path / "in" / f"{i}.jpg", size=(40, 30))
        command = [sys.executable, "-m", "camcli", "batch", str(tmp_path / "in"), "--out",
                   str(tmp_path / "out"), "--engine", "ray", "--ray-address",
                   f"{host}:{port}", "--actors", "1", "--cpus-per-actor", "0.25", "-v",
                   "--model", model_files["gap"], *TINY]
        deadline = time.monotonic() + 120
        while head.poll() is None and time.monotonic() < deadline:  # the GCS port answers
            try:
                socket.create_connection((host, port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.2)
        while True:
            done = subprocess.run(command, cwd=REPO, capture_output=True, text=True,
                                  timeout=300, env=secured)
            if done.returncode == 0 or time.monotonic() > deadline or head.poll() is not None:
                break
            time.sleep(2)  # the head may still be starting
        assert done.returncode == 0, done.stderr[-3000:]
        assert "ray: 1 actors, each 0.25 CPU and 0 GPU, on a cluster of 1 CPUs" in done.stderr
        assert len(records(tmp_path / "out")) == 3
    finally:
        # --block: stopping it stops its cluster. Ctrl-C stops it in a second; SIGTERM
        # takes it half a minute (measured), and leaves nothing either. On a busy machine
        # Ctrl-C once took over a minute: then the whole process group is killed, so that
        # nothing of this cluster outlives the test either way.
        os.killpg(head.pid, signal.SIGINT)
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait(timeout=30)
        assert not [line for line in subprocess.run(
            ["ps", "-eo", "args"], capture_output=True, text=True).stdout.splitlines()
            if f"--gcs-address={host}:{port}" in line or f"--gcs_server_port={port}" in line]
        current = "/tmp/ray/ray_current_cluster"  # where ray.init() looks for a cluster
        if os.path.exists(current) and open(current).read().strip() == f"{host}:{port}":
            os.remove(current)


def test_without_the_extra_the_ray_engine_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    result = run(["batch", str(SAMPLES), "--out", str(tmp_path / "o"), "--engine", "ray"])
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "Error: the ray engine needs Ray Data, which is not installed: "
        "pip install 'camcli[ray]'")


def test_ray_options_need_the_ray_engine(tmp_path):
    result = run(["batch", str(SAMPLES), "--out", str(tmp_path / "o"), "--actors", "2",
                  "--gpus-per-actor", "0.5"])
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "Error: --actors, --gpus-per-actor apply to --engine ray only")
    bad = run(["batch", str(SAMPLES), "--out", str(tmp_path / "o"), "--engine", "ray",
               "--actors", "3:2"])
    assert bad.exit_code == 2 and "'3:2' is not N or MIN:MAX" in bad.stderr


def test_a_cluster_that_cannot_be_joined_is_one_clear_error(tmp_path):
    address = f"127.0.0.1:{free_port()}"  # nothing listens there
    done = subprocess.run([sys.executable, "-m", "camcli", "batch", str(SAMPLES / "cat.jpg"),
                           "--out", str(tmp_path / "o"), "--engine", "ray", "--ray-address",
                           address], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1].startswith(
        f"Error: cannot join the Ray cluster at {address}: ")


def test_actors_that_no_node_can_hold_are_refused(ray_cluster, tmp_path, model_files):
    args = ["batch", str(SAMPLES / "cat.jpg"), "--out", str(tmp_path / "o"), "--engine", "ray",
            "--model", model_files["gap"], *TINY]
    result = run([*args, "--gpus-per-actor", "0.5"])
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "Error: --gpus-per-actor 0.5 is more than any node of the Ray cluster has "
        "(0 GPUs at most)")
    assert not (tmp_path / "o" / "cat.jpg").exists()


@pytest.mark.s3
def test_ray_reads_and_writes_the_bucket_itself(tmp_path, bucket, model_args):
    """--engine ray with s3:// in and out, and no shared filesystem: the actors read and
    write the store (with the Storage the driver hands them); the records equal the local
    engine's."""
    from test_buckets import bucket_tree, put_tree, records_of

    put_tree(bucket_tree(tmp_path), f"{bucket}/tree")
    local = run(["batch", f"{bucket}/tree", "--out", f"{bucket}/local", *model_args])
    assert local.exit_code == 1, local.output  # sub/broken.jpg
    env = dict(os.environ, RAY_ADDRESS="local")  # its own Ray: workers get the AWS_* settings
    done = subprocess.run([sys.executable, "-m", "camcli", "batch", f"{bucket}/tree", "--out",
                           f"{bucket}/ray", "--engine", "ray", "-q", *model_args], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 1, done.stderr[-3000:]
    assert records_of(f"{bucket}/ray") == records_of(f"{bucket}/local")
    assert len(records_of(f"{bucket}/ray")) == 4


@pytest.mark.hub
def test_the_attention_methods_on_ray_equal_local(ray_cluster, keras, tmp_path):
    """The attention methods travel to the actors as any method does: the same records
    and maps as the local engine; so does the default (auto: rollout on a DeiT), which
    each actor resolves from the same model."""
    pytest.importorskip("keras_hub")
    import hub_models

    path = tmp_path / "deit.keras"
    hub_models.deit(keras).save(path)
    for number in range(5):
        write_image(tmp_path / "in" / f"{number}.png", size=(32, 32),
                    color=(40 * number, 200 - 30 * number, 90))
    for method, ran in (("gradrollout", "gradrollout"), ("legrad", "legrad"),
                        ("auto", "rollout")):
        args = ["batch", str(tmp_path / "in"), "--save-maps", "--method", method,
                "--model", str(path), "--batch-size", "2", "-q", "--device", "cpu"]
        local = run([*args, "--out", str(tmp_path / f"local-{method}")])
        ray = run([*args, "--out", str(tmp_path / f"ray-{method}"), "--engine", "ray"])
        assert local.exit_code == ray.exit_code == 0, ray.output
        mine = assert_same_records(tmp_path / f"local-{method}", tmp_path / f"ray-{method}")
        assert len(mine) == 5 and {r["method"] for r in mine.values()} == {ran}
