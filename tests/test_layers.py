"""``camcli layers``: every address --layer accepts, with its shape and the default."""

from __future__ import annotations

import json

import pytest
from conftest import run, seeded_weights, write_image


@pytest.fixture(scope="module")
def nested(keras, tmp_path_factory):
    """Rescaling in front, a functional backbone inside (a spatial conv, then a 1x1 pool),
    GAP -> Dense."""
    inner_in = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="c1")(inner_in)
    x = keras.layers.MaxPooling2D(8, name="p")(x)
    backbone = keras.Model(inner_in, x, name="backbone")
    inputs = keras.Input((8, 8, 3))
    y = backbone(keras.layers.Rescaling(1 / 255, name="scale")(inputs))
    y = keras.layers.GlobalAveragePooling2D(name="gap")(y)
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax", name="fc")(y))
    seeded_weights(model, seed=4)
    path = tmp_path_factory.mktemp("layers") / "nested.keras"
    model.save(path)
    return str(path)


def test_layers_lists_what_layer_accepts_and_the_default(nested, tmp_path):
    result = run(["layers", nested, "--format", "json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == [
        {"address": "scale", "shape": [None, 8, 8, 3], "grid": None, "prefix_tokens": None,
         "default": False},
        {"address": "backbone/c1", "shape": [None, 8, 8, 4], "grid": None,
         "prefix_tokens": None, "default": True},  # the last map wider than 1x1
        {"address": "backbone/p", "shape": [None, 1, 1, 4], "grid": None,
         "prefix_tokens": None, "default": False},
    ]
    photo = write_image(tmp_path / "x.png", size=(20, 16))
    for address in ("backbone/c1", "backbone/p"):  # each is taken as it is listed
        explained = run(["gradcam", str(photo), "--model", nested, "--layer", address,
                         "--device", "cpu", "-o", str(tmp_path / "x.jpg")])
        assert explained.exit_code == 0, (address, explained.output)
    # Keras gives no gradient at a Rescaling layer's output (even in a plain functional
    # model): a gradient method says so instead of a traceback; EigenCAM needs none.
    refused = run(["gradcam", str(photo), "--model", nested, "--layer", "scale", "--device",
                   "cpu", "-o", str(tmp_path / "x.jpg")])
    assert refused.exit_code == 2
    assert refused.stderr.strip().splitlines()[-1] == (
        "Error: gradcam needs the gradient of the class score at layer 'scale', and Keras "
        "gives none there (a preprocessing layer such as Rescaling, or one whose output the "
        "classifier does not use); choose a later layer ('camcli layers MODEL' lists them)")
    eigen = run(["explain", "--method", "eigencam", str(photo), "--model", nested, "--layer",
                 "scale", "--device", "cpu", "-o", str(tmp_path / "x.jpg")])
    assert eigen.exit_code == 0, eigen.output


def test_layers_table_marks_the_default(nested):
    result = run(["layers", nested])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        "address      shape",
        "scale        8x8x3",
        "backbone/c1  8x8x4  (default)",
        "backbone/p   1x1x4",
    ]


def test_layers_of_a_built_in_model_marks_its_registered_layer():
    result = run(["layers", "vgg16", "--format", "json"])  # no weights are downloaded
    assert result.exit_code == 0, result.output
    listed = json.loads(result.stdout)
    assert [row["address"] for row in listed if row["default"]] == ["block5_conv3"]
    assert listed[-1]["address"] == "block5_pool"  # later, but not the registered one


def test_layers_of_an_unknown_model():
    result = run(["layers", "alexnet"])
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines()[-1].startswith(
        "Error: unknown model 'alexnet': use a built-in name")
