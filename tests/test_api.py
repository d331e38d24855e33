"""The Python API (`camcli.run.api`): the same maps and pictures as the commands, from a
path, a PIL image or an array, and from a built-in, a model file or a model in memory."""

from __future__ import annotations

import doctest
import io
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO, SAMPLES, run, write_image
from PIL import Image

import camcli
from camcli.run import api


@pytest.fixture
def tiny(model_files):
    """`open`'s options for the tiny model file (the CLI's ``model_args``)."""
    return {"labels_file": model_files["labels"], "preprocess": "scale01", "device": "cpu"}


def test_the_map_is_what_save_maps_saves_and_the_overlay_what_the_command_draws(
        tmp_path, model_files, model_args, tiny):
    photo = write_image(tmp_path / "in" / "red.jpg", size=(64, 48))
    assert run(["batch", str(photo.parent), "--out", str(tmp_path / "out"), "--save-maps",
                "--method", "gradcam", *model_args]).exit_code == 0
    result = camcli.open(model_files["gap"], "gradcam", **tiny).explain(str(photo))
    saved = np.load(tmp_path / "out" / "red.npy")
    assert result.map.dtype == np.float32
    np.testing.assert_array_equal(result.map, saved)
    assert result.class_name == ["red thing", "green thing", "blue thing"][result.class_index]
    assert result.probability == pytest.approx(float(result.probabilities.max()))

    from camcli.run.render import encode_jpeg

    drawn = np.asarray(result.overlay())[:, :, ::-1]  # RGB -> BGR, as OpenCV encodes
    written = (tmp_path / "out" / "red.jpg").read_bytes()
    assert encode_jpeg(np.ascontiguousarray(drawn), 90) == written
    assert result.overlay(panel=True).size == (3 * 64, result.overlay(panel=True).size[1])


def test_a_path_a_pil_image_and_an_array_give_the_same_map(tmp_path, model_files, tiny):
    photo = write_image(tmp_path / "blue.png", size=(50, 40), color=(20, 40, 220))
    session = camcli.open(model_files["gap"], "gradcam", **tiny)
    rgb = np.asarray(Image.open(photo).convert("RGB"))
    by_path, by_pil, by_array = session.explain_many([str(photo), Image.open(photo), rgb])
    assert (by_pil.input, by_array.input) == ("<image 1>", "<image 2>")
    for other in (by_pil, by_array):
        np.testing.assert_array_equal(other.map, by_path.map)
        np.testing.assert_array_equal(other.probabilities, by_path.probabilities)
    grey = session.explain(rgb[:, :, 0])
    np.testing.assert_array_equal(
        grey.map, session.explain(np.repeat(rgb[:, :, :1], 3, axis=2)).map)


def test_a_model_in_memory_a_model_file_and_a_builtin_give_the_same_maps(tmp_path, keras):
    from camcli.compute.models import efficientnet_lite

    photo = str(SAMPLES / "cat.jpg")
    builtin = camcli.open("efficientnet-lite0", "gradcam", device="cpu").explain(photo)
    model = efficientnet_lite.pretrained()
    path = tmp_path / "lite0.keras"
    model.save(path)
    same = {"layers": "top_activation", "device": "cpu"}  # a file has no registered layer
    from_file = camcli.open(str(path), "gradcam", **same).explain(photo)
    in_memory = camcli.open(model, "gradcam", **same).explain(photo)
    assert builtin.class_name == from_file.class_name == in_memory.class_name == "Egyptian_cat"
    for other in (from_file, in_memory):
        np.testing.assert_allclose(other.map, builtin.map, atol=1e-6)
        np.testing.assert_allclose(other.probabilities, builtin.probabilities, atol=1e-6)


def test_errors_are_the_librarys_exceptions(tmp_path, model_files, tiny):
    session = camcli.open(model_files["gap"], "gradcam", **tiny)
    with pytest.raises(camcli.ImageError) as missing:
        session.explain(str(tmp_path / "gone.jpg"))
    assert str(missing.value) == f"{tmp_path / 'gone.jpg'}: file not found"
    (tmp_path / "bad.jpg").write_bytes(b"not a jpeg")
    good = write_image(tmp_path / "good.jpg")
    kept = list(session.explain_many([str(tmp_path / "bad.jpg"), str(good)], on_error="keep"))
    assert kept[0].error == "not a recognised image format" and kept[0].map is None
    assert kept[1].error is None and kept[1].map is not None
    with pytest.raises(ValueError, match="bad.jpg: no map to draw"):
        kept[0].overlay()
    with pytest.raises(camcli.UsageProblem) as wrong:
        session.explain(np.zeros((8, 8, 3), np.float32))
    assert str(wrong.value) == "<image 0>: an array image must be uint8 (0-255), got float32"
    with pytest.raises(TypeError, match=r"camcli.open\(\) has no option 'layer'; its options: "
                                        r"weights, labels_file"):
        camcli.open(model_files["gap"], layer="conv", **tiny)
    with pytest.raises(camcli.LayerError, match="nope"):
        camcli.open(model_files["gap"], "gradcam", layers="nope", **tiny)
    with pytest.raises(camcli.UnknownModel, match="model file not found"):
        camcli.open(str(tmp_path / "missing.keras"))


def test_options_are_the_commands_and_predicting_needs_no_method(tmp_path, model_files, tiny):
    photo = str(write_image(tmp_path / "p.jpg"))
    ranked = camcli.open(model_files["gap"], "gradcam", top_k_maps=2, alpha=0.7,
                         colormap="viridis", **tiny).explain(photo)
    assert [index for index, _ in ranked.maps] == [i for i, _, _ in ranked.top(2)]
    assert ranked.overlay(1).size == (64, 48)
    predicted = camcli.open(model_files["gap"], None, **tiny).explain(photo)
    assert predicted.maps == () and predicted.map is None and predicted.top(1) == ranked.top(1)
    assert predicted._repr_png_() is None
    png = ranked._repr_png_()
    assert Image.open(io.BytesIO(png)).size == (64, 48)
    assert set(api.OPTIONS) >= {"layers", "class_spec", "top_k_maps", "alpha", "device"}


def test_importing_camcli_imports_no_tensorflow():
    code = ("import sys, camcli; camcli.ImageError; "
            "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


def test_the_api_docstring_examples_run(monkeypatch):
    monkeypatch.chdir(REPO)
    monkeypatch.setenv("CAMCLI_DEVICE", "cpu")
    failures, tried = doctest.testmod(api, raise_on_error=False, report=True)[:2]
    assert tried >= 4 and failures == 0
    assert os.getcwd() == str(REPO)
