"""Several layers fused: one forward pass, each layer's map normalised, upsampled to the
finest grid and fused by mean or max; against a reference built from single-layer maps."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from conftest import run, seeded_weights, write_image
from test_methods import normalised

from camcli.compute.methods import METHODS
from camcli.compute.models import graph
from camcli.errors import UsageProblem


def two_scale_model(keras):
    """conv_a (8x8) -> max-pool -> conv_b (4x4) -> GAP -> Dense(softmax)."""
    inputs = keras.Input((8, 8, 3))
    a = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv_a")(inputs)
    x = keras.layers.MaxPooling2D(name="pool")(a)
    b = keras.layers.Conv2D(5, 3, padding="same", activation="relu", name="conv_b")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(b)
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax", name="fc")(x))
    seeded_weights(model, seed=11, scale=0.6)
    return model


@pytest.mark.parametrize("method", ["gradcam", "layercam", "hirescam", "eigencam"])
@pytest.mark.parametrize("mode", ["mean", "max"])
def test_fused_maps_equal_the_reference(keras, method, mode):
    model = two_scale_model(keras)
    images = np.random.default_rng(4).uniform(0, 1, (3, 8, 8, 3)).astype(np.float32)
    per_layer = [METHODS[method](graph.build(model, name))(images, 2)
                 for name in ("conv_a", "conv_b")]
    fused = METHODS[method](graph.build(model, ["conv_a", "conv_b"]), fuse=mode)(images, 2)
    assert fused.maps.shape == (3, 8, 8)  # the finer grid
    np.testing.assert_allclose(fused.probabilities, per_layer[0].probabilities, atol=1e-6)
    for row in range(3):
        fine = normalised(per_layer[0].raw_maps[row].astype(np.float64))
        coarse = cv2.resize(normalised(per_layer[1].raw_maps[row]).astype(np.float32), (8, 8),
                            interpolation=cv2.INTER_LINEAR)
        combined = (fine + coarse) / 2 if mode == "mean" else np.maximum(fine, coarse)
        np.testing.assert_allclose(fused.maps[row], normalised(combined), atol=1e-5)


def test_methods_that_cannot_fuse_say_why(keras):
    split = graph.build(two_scale_model(keras), ["conv_b", "conv_a"])
    assert split.layers == ["conv_b", "conv_a"]
    with pytest.raises(UsageProblem, match="^cam cannot fuse several layers: CAM is defined "
                                           "at the layer before the global average pooling"):
        METHODS["cam"](split)
    with pytest.raises(UsageProblem, match="^scorecam cannot fuse several layers"):
        METHODS["scorecam"](split)


def test_batch_records_the_layers_and_saves_the_finest_map(tmp_path):
    for i in range(2):
        write_image(tmp_path / "in" / f"{i}.jpg", size=(80, 60))
    out = tmp_path / "out"
    args = ["batch", str(tmp_path / "in"), "--out", str(out), "--layer", "top_activation",
            "--layer", "block10_add", "--fuse", "max", "--save-maps", "--method", "layercam",
            "-q"]
    assert run(args).exit_code == 0
    record = json.loads((out / "manifest.jsonl").read_text().splitlines()[0])
    assert (record["layer"], record["fuse"]) == (["top_activation", "block10_add"], "max")
    assert np.load(out / record["map"]).shape == (14, 14)
    assert "2 inputs: 0 written, 2 already done" in run(args).stderr
    mean = run([a if a != "max" else "mean" for a in args])  # another fusion: redone
    assert "2 inputs: 2 written" in mean.stderr
    refused = run(["cam", str(tmp_path / "in" / "0.jpg"), "--layer", "top_activation",
                   "--layer", "block10_add", "-o", str(tmp_path / "x.jpg")])
    assert refused.exit_code == 2
    assert refused.stderr.strip().splitlines()[-1] == (
        "Error: cam cannot fuse several layers: CAM is defined at the layer before the global "
        "average pooling only")
