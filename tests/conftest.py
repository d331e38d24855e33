"""Shared fixtures: seeded tiny Keras models and images made on the fly.

Everything is offline and small; the few tests that build a full keras.applications model
use random weights.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from click.testing import CliRunner  # noqa: E402
from pasted import PASTED, pasted_tree  # noqa: E402, F401  (tests import them from here)
from PIL import Image  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "sample_images"


#: Markers from the fixtures a test uses (see pyproject's markers).
FIXTURE_MARKERS = {"ray_cluster": "ray", "s3_server": "s3", "hub": "hub"}


def pytest_collection_modifyitems(items):
    for item in items:
        for fixture, marker in FIXTURE_MARKERS.items():
            if fixture in getattr(item, "fixturenames", ()):
                item.add_marker(marker)


@pytest.fixture(scope="session")
def keras():
    from camcli.compute.backend import tensorflow

    tensorflow()
    import keras

    return keras


@pytest.fixture(scope="session")
def loaded(keras):
    """``loaded(model, precision)``: `camcli.compute.models.load` once a session per
    (model, precision), for tests that read a model without changing it (one that changes
    a model, `apply_precision` on it say, loads its own)."""
    from camcli.compute.models import load

    cache: dict[tuple[str, str], object] = {}

    def get(model: str = "efficientnet-lite0", precision: str = "fp32"):
        if (model, precision) not in cache:
            cache[model, precision] = load(model, precision=precision)
        return cache[model, precision]

    return get


def seeded_weights(model, seed: int = 0, scale: float = 0.5) -> None:
    """Give every weight a reproducible random value (biases too, so nothing is trivial)."""
    rng = np.random.default_rng(seed)
    model.set_weights([rng.normal(0.0, scale, w.shape).astype("float32")
                       for w in model.get_weights()])


def gap_model(keras, size=8, channels=4, classes=3, activation="softmax", seed=0):
    """Input -> Conv(3x3, ReLU) -> GAP -> Dense: the CAM-compatible head."""
    inputs = keras.Input((size, size, 3))
    x = keras.layers.Conv2D(channels, 3, padding="same", activation="relu", name="conv")(inputs)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = keras.layers.Dense(classes, activation=activation, name="fc")(x)
    model = keras.Model(inputs, outputs, name="tiny_gap")
    seeded_weights(model, seed)
    return model


#: The classes of the ``tie`` model file that tie: tabby (281) and Egyptian cat (285).
TIED = (281, 285)


def tie_model(keras, size=32, channels=6, classes=3, seed=3, tied=(0, 1)):
    """A GAP model whose classes ``tied`` always tie exactly, ahead of all others: the Dense
    layer's columns (and biases) for them are identical, and their bias is large."""
    model = gap_model(keras, size=size, channels=channels, classes=classes, seed=seed)
    kernel, bias = model.get_layer("fc").get_weights()
    kernel[:, list(tied)] = kernel[:, [tied[0]]]
    bias[:] = 0.0
    bias[list(tied)] = 4.0
    model.get_layer("fc").set_weights([kernel, bias])
    return model


@pytest.fixture(scope="session")
def model_files(keras, tmp_path_factory):
    folder = tmp_path_factory.mktemp("models")
    gap = folder / "tiny_gap.keras"
    gap_model(keras, size=32, channels=6, classes=3, seed=1).save(gap)
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(4, 3, name="conv")(inputs)
    x = keras.layers.Flatten(name="flatten")(x)  # named: messages quote it, in any test order
    flat = folder / "tiny_flat.keras"
    keras.Model(inputs, keras.layers.Dense(3, activation="softmax", name="fc")(x)).save(flat)
    labels = folder / "labels.txt"
    labels.write_text("red thing\ngreen thing\nblue thing\n")
    tie = folder / "tiny_tie.keras"  # ImageNet's tabby and Egyptian cat always tie
    tie_model(keras, classes=1000, tied=TIED).save(tie)
    return {"gap": str(gap), "flat": str(flat), "labels": str(labels), "tie": str(tie)}


@pytest.fixture
def model_args(model_files):
    return ["--model", model_files["gap"], "--labels", model_files["labels"],
            "--preprocess", "scale01", "--device", "cpu"]


def run(args, cwd=None):
    """Invoke the real CLI in-process (stdout and stderr kept apart), optionally in ``cwd``."""
    from camcli.cli import main

    runner = CliRunner()
    if cwd is None:
        return runner.invoke(main, args, catch_exceptions=False)
    previous = os.getcwd()
    os.chdir(cwd)
    try:
        return runner.invoke(main, args, catch_exceptions=False)
    finally:
        os.chdir(previous)


class Paused:
    """A camcli subprocess that pauses at a point the test chooses (`camcli.io.checkpoints`):
    ``Paused(command, "recorded", 12, folder)`` starts it, `wait` returns once it is paused
    there, `resume` lets it go on. The test kills or signals it at that point, not after a
    sleep that a fast or slow machine would turn into another test."""

    def __init__(self, command: list[str], point: str, count: int, folder: Path, **popen):
        import subprocess

        from camcli.io.checkpoints import ENVIRONMENT

        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        for name in ("paused", "resume"):
            (folder / name).unlink(missing_ok=True)
        env = dict(popen.pop("env", os.environ), **{ENVIRONMENT: f"{point}:{count}:{folder}"})
        self.process = subprocess.Popen(command, env=env, **popen)

    def wait(self, timeout: float = 300) -> None:
        """Block until the process is paused. Fails if it ended first."""
        import time

        deadline = time.monotonic() + timeout
        while not (self.folder / "paused").exists():
            assert self.process.poll() is None, "the run ended before the pause point"
            assert time.monotonic() < deadline, "the run never reached the pause point"
            time.sleep(0.01)

    def resume(self) -> None:
        (self.folder / "resume").touch()


def png_header_only(width: int, height: int) -> bytes:
    """A valid PNG header declaring ``width`` x ``height`` and no pixel data."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(
            ">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def write_image(path: Path, size=(64, 48), color=(200, 30, 30), mode="RGB", fmt=None) -> Path:
    """A small real image file: a coloured rectangle on a gradient."""
    width, height = size
    gradient = np.linspace(0, 255, width, dtype=np.float32)[None, :, None]
    pixels = np.broadcast_to(gradient, (height, width, 3)).copy()
    pixels[height // 4: height // 2, width // 4: width // 2] = color
    image = Image.fromarray(pixels.astype(np.uint8), "RGB")
    if mode != "RGB":
        image = image.convert(mode)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format=fmt)
    return path


def _untracked_files() -> set[str] | None:
    """The repository's untracked files (``git status``), or None without git."""
    import subprocess

    try:
        done = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"],
                              cwd=REPO, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0:
        return None
    return {line[3:] for line in done.stdout.splitlines() if line.startswith("??")}


@pytest.fixture(scope="session", autouse=True)
def working_tree_stays_clean():
    """No test writes into the repository: a file a test leaves there (a picture written
    to the current folder) fails the run, named."""
    before = _untracked_files()
    yield
    after = _untracked_files()
    if before is not None and after is not None:
        assert after <= before, f"the tests wrote into the working tree: {sorted(after - before)}"


@pytest.fixture(scope="session", autouse=True)
def private_cache(tmp_path_factory):
    """Tests never read or write the user's real cache folder."""
    folder = tmp_path_factory.mktemp("camcli-cache")
    previous = os.environ.get("CAMCLI_CACHE")
    os.environ["CAMCLI_CACHE"] = str(folder)
    yield folder
    if previous is None:
        os.environ.pop("CAMCLI_CACHE", None)
    else:
        os.environ["CAMCLI_CACHE"] = previous


@pytest.fixture(scope="session")
def ray_cluster(tmp_path_factory):
    """One local Ray for the whole session (2 CPUs, a small object store), shared by every
    test of the ray engine: the engine joins it instead of starting its own. Yields its
    address, for subprocesses that join it with --ray-address."""
    ray = pytest.importorskip("ray", reason="Ray is not installed: pip install 'camcli[ray]'")
    import logging

    # address="local": a new instance, whatever `ray start` left on this machine
    ray.init(address="local", num_cpus=2, object_store_memory=200 * 1024 * 1024,
             include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


# -- a real S3 API: moto's server mode on the loopback address ---------------------------------


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (for a server a test starts)."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="session")
def s3_server():
    """moto's S3 server on 127.0.0.1 at a free port, for the whole session; camcli reaches
    it over HTTP through the standard ``AWS_*`` variables (no patching of botocore). The
    server is stopped and the variables restored at the end."""
    import socket
    import subprocess
    import sys
    import time

    pytest.importorskip("s3fs", reason="the S3 tests need camcli[s3]")
    pytest.importorskip("moto.server", reason="the S3 tests need moto[server]")
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p",
                               str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                raise RuntimeError("moto's S3 server did not start") from None
            time.sleep(0.1)
    settings = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "test",
                "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"}
    saved = {key: os.environ.get(key) for key in settings}
    os.environ.update(settings)  # each command's stores are made after this, and read them
    try:
        yield settings["AWS_ENDPOINT_URL"]
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()


@pytest.fixture
def bucket(s3_server, request):
    """A new, empty bucket for one test: its ``s3://`` URL."""
    import re

    import boto3

    name = re.sub(r"[^a-z0-9-]", "-", request.node.name.lower())[:40].strip("-")
    name = f"t{abs(hash(request.node.nodeid)) % 10**8:08d}-{name}"[:63].rstrip("-")
    boto3.client("s3").create_bucket(Bucket=name)
    return f"s3://{name}"


# -- one trained head for the session ----------------------------------------------------

#: Six classes named as a user would, none of them ImageNet's own spelling.
TRAIN_PHOTOS = {"cat.jpg": "my_cat", "coffee.jpg": "Coffee Cup", "camera.png": "camera-rig",
                "motorcycle.jpg": "bike", "rocket.jpg": "rocket", "astronaut.jpg": "astronaut"}
#: The arguments `trained` trains with (besides the tree and the output).
TRAIN_ARGS = ["--val-split", "0.25", "--seed", "3", "-q"]


def train_tree(root, per_class, seed):
    return pasted_tree(root, per_class=per_class, seed=seed, scale=(0.35, 0.7),
                       photos=TRAIN_PHOTOS, crop=0.6)


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """``camcli train`` on six pasted classes, once a session: ``(work folder, model,
    result)``; the tree is ``work/tree`` (with a broken file and one outside the classes)."""
    work = tmp_path_factory.mktemp("train")
    train_tree(work / "tree", per_class=8, seed=1)
    (work / "tree" / "bike" / "broken.jpg").write_bytes(b"not an image")  # skipped, listed
    (work / "tree" / "loose.jpg").write_bytes((work / "tree" / "rocket" / "rocket_0.jpg")
                                              .read_bytes())  # not in a class folder
    model = work / "model.keras"
    result = run(["train", str(work / "tree"), "-o", str(model), *TRAIN_ARGS])
    assert result.exit_code == 0, result.output
    return work, model, result


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def dom(page, fragment: str) -> str:
    """The page's DOM after its script ran, from headless Chromium."""
    if not CHROMIUM:
        pytest.skip("Chromium is not installed (make test installs the Debian package "
                    "'chromium' where it can): the browser test cannot run")
    with tempfile.TemporaryDirectory(prefix="camcli-chromium-") as profile:
        command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                   "--no-first-run", "--disable-background-networking",
                   "--disable-component-update", "--disable-sync",
                   f"--user-data-dir={profile}", "--virtual-time-budget=5000",
                   "--dump-dom", page.as_uri() + fragment]
        done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def cards(document: str) -> list[str]:
    return re.findall(r'<div class="card( error)?" data-score="([^"]*)"', document)
