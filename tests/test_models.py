"""Built-in models (random weights: nothing is downloaded) and model files."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import gap_model

from camcli.compute.explainer import build_explainer
from camcli.compute.methods import CAM, TOP1
from camcli.compute.models import BUILTIN, load
from camcli.compute.models.preprocess import preprocess
from camcli.compute.targets import Targets
from camcli.errors import CamNotApplicable, ModelError, UnknownModel, UsageProblem

#: The keras.applications module whose own preprocess_input each built-in's mode must equal.
KERAS_PREPROCESS = {"resnet50": "resnet50", "vgg16": "vgg16", "mobilenet_v2": "mobilenet_v2",
                    "efficientnetb0": "efficientnet"}


@pytest.mark.parametrize("name, map_size", [
    ("efficientnet-lite0", 7), ("resnet50", 7), ("vgg16", 14), ("mobilenet_v2", 7),
    ("efficientnetb0", 7),
])
def test_builtin_model_registered_layer_and_head(name, map_size):
    import keras

    loaded = load(name, weights=None)
    assert loaded.input_size == (224, 224) and len(loaded.labels) == 1000
    explainer = build_explainer(loaded)  # Grad-CAM, the default method
    assert explainer.layer == BUILTIN[name].target_layer
    assert tuple(explainer.graph.model.outputs[0].shape[1:3]) == (map_size, map_size)
    assert explainer.graph.output_kind == "softmax"
    if BUILTIN[name].cam:  # the registry's claim, checked against the model's real head
        CAM(explainer.graph)
    else:
        with pytest.raises(CamNotApplicable, match="use gradcam instead"):
            CAM(explainer.graph)
    photos = np.random.default_rng(0).uniform(0, 255, (2, 224, 224, 3)).astype("float32")
    batch = preprocess(loaded.preprocess, photos)
    if name in KERAS_PREPROCESS:  # the registry's mode is what Keras feeds this family
        family = getattr(keras.applications, KERAS_PREPROCESS[name])
        np.testing.assert_allclose(batch, family.preprocess_input(photos.copy()), atol=1e-4)
    # the split model (softmax peeled off, then put back) gives the model's own numbers
    explained = explainer(photos, Targets(np.full(2, TOP1, np.int32)))
    np.testing.assert_allclose(explained.probabilities, loaded.model(batch, training=False),
                               rtol=1e-4, atol=1e-6)


def test_failed_imagenet_download_says_what_to_do(monkeypatch, capsys):
    from keras.src.utils import file_utils

    def offline(*args, **kwargs):
        print("Downloading data from https://example.invalid/weights.h5")
        raise Exception("URL fetch failure on https://example.invalid/weights.h5: None -- "
                        "[Errno -2] Name or service not known")

    monkeypatch.setattr(file_utils, "get_file", offline)
    with pytest.raises(ModelError) as info:
        load("resnet50")
    message = str(info.value)
    assert message.startswith("could not download the ImageNet weights of resnet50 (URL fetch")
    assert "needs internet" in message and "weights FILE" in message
    assert "use the default model (efficientnet-lite0)" in message
    assert capsys.readouterr().out == ""  # Keras' download notice went to stderr


def test_weights_file_for_a_builtin(tmp_path):
    first = load("mobilenet_v2", weights=None)
    path = tmp_path / "mine.weights.h5"
    first.model.save_weights(path)
    again = load("mobilenet_v2", weights=str(path))
    assert all((a == b).all() for a, b in zip(first.model.get_weights(),
                                              again.model.get_weights(), strict=False))
    with pytest.raises(UsageProblem, match="weights file not found: nope.h5"):
        load("mobilenet_v2", weights="nope.h5")


def test_model_file_loads_with_its_input_size(keras, tmp_path):
    path = tmp_path / "m.keras"
    gap_model(keras, size=40, classes=1000).save(path)
    loaded = load(str(path), preprocess="torch")
    assert loaded.input_size == (40, 40) and loaded.preprocess == "torch"
    assert loaded.labels.name(281) == "tabby"  # 1000 outputs: ImageNet names


def test_unsafe_lambda_model_is_refused(keras, tmp_path):
    inputs = keras.Input((8, 8, 3))
    outputs = keras.layers.Lambda(lambda x: x * 2)(inputs)
    path = tmp_path / "lambda.keras"
    keras.Model(inputs, outputs).save(path)
    with pytest.raises(ModelError) as info:
        load(str(path))
    assert str(info.value) == (
        f"cannot load model file {path}: it holds Python code (a Lambda layer), which camcli "
        "does not run by default; if you trust the file, pass unsafe_model_code")


def test_unsafe_model_code_is_an_explicit_choice(keras, tmp_path, caplog):
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Lambda(lambda t: t * 2)(inputs)
    x = keras.layers.Conv2D(2, 3, name="conv")(x)
    path = tmp_path / "lambda.keras"
    original = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Flatten()(x)))
    original.save(path)
    loaded = load(str(path), unsafe_model_code=True)
    x = np.random.default_rng(0).uniform(0, 1, (2, 8, 8, 3)).astype("float32")
    # The file's Lambda ran: the loaded model computes what the original computes.
    np.testing.assert_allclose(loaded.model(x), original(x), rtol=1e-6)
    assert "Python code stored in the file will run" in caplog.text


def test_unknown_names():
    with pytest.raises(UnknownModel, match="unknown model 'alexnet': use a built-in name"):
        load("alexnet")
    with pytest.raises(UnknownModel, match="model file not found: x/y.keras"):
        load("x/y.keras")
