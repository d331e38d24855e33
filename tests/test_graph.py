"""Splitting models open at the target layer: nested backbones, automatic choice, errors."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import gap_model, seeded_weights

from camcli.compute.methods import CAM, GradCAM
from camcli.compute.methods.cam import classifier_kernel
from camcli.compute.models import graph
from camcli.errors import CamNotApplicable, LayerError


def small_backbone(keras, name="backbone"):
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(6, 3, padding="same", activation="relu", name="conv_a")(inputs)
    x = keras.layers.MaxPooling2D(name="pool")(x)
    x = keras.layers.Conv2D(5, 3, padding="same", activation="relu", name="conv_b")(x)
    return keras.Model(inputs, x, name=name)


def flat_twin(keras, backbone, head_weights):
    """The same network without nesting, sharing the backbone's weights."""
    inputs = keras.Input((16, 16, 3))
    x = inputs
    for layer in backbone.layers[1:]:
        x = layer(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    dense = keras.layers.Dense(head_weights[0].shape[1], activation="softmax")
    outputs = dense(x)
    model = keras.Model(inputs, outputs)
    dense.set_weights(head_weights)
    return model


@pytest.fixture(scope="module")
def nested(keras):
    backbone = small_backbone(keras)
    model = keras.Sequential([
        keras.Input((16, 16, 3)),
        backbone,
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dropout(0.3),
        keras.layers.Dense(4, activation="softmax"),
    ])
    seeded_weights(model, seed=4)
    return model, backbone


def test_nested_backbone_layer_is_found_and_explained(keras, nested):
    model, backbone = nested
    explained = graph.build(model)
    assert explained.layer == "backbone/conv_b"
    assert explained.output_kind == "softmax"
    # CAM's rule reads the head through the Dropout: the classifier's own kernel
    assert classifier_kernel(explained) is model.layers[-1].kernel

    twin = flat_twin(keras, backbone, model.layers[-1].get_weights())
    twin_graph = graph.build(twin, "conv_b")
    batch = np.random.default_rng(0).uniform(0, 1, (3, 16, 16, 3)).astype("float32")
    classes = np.array([0, 2, 3], dtype=np.int32)
    for method in (CAM, GradCAM):
        got = method(explained)(batch, classes)
        want = method(twin_graph)(batch, classes)
        np.testing.assert_allclose(got.raw_maps, want.raw_maps, atol=1e-5)
        np.testing.assert_allclose(got.probabilities, model.predict(batch, verbose=0), atol=1e-5)


def test_nested_layer_by_path_and_by_bare_name(keras, nested):
    model, _ = nested
    assert graph.build(model, "backbone/conv_a").layer == "backbone/conv_a"
    assert graph.build(model, "conv_a").layer == "backbone/conv_a"


def test_keras_applications_backbone_inside_sequential(keras):
    # The transfer-learning shape that breaks tf-keras-vis and tf-explain.
    backbone = keras.applications.MobileNetV2(include_top=False, weights=None,
                                              input_shape=(64, 64, 3), alpha=0.35)
    model = keras.Sequential([keras.Input((64, 64, 3)), backbone,
                              keras.layers.GlobalAveragePooling2D(),
                              keras.layers.Dense(3, activation="softmax")])
    explained = graph.build(model)
    assert explained.layer.endswith("/out_relu")
    batch = np.random.default_rng(0).uniform(-1, 1, (2, 64, 64, 3)).astype("float32")
    cam, gradcam = CAM(explained)(batch), GradCAM(explained)(batch)
    assert cam.maps.shape == gradcam.maps.shape == (2, 2, 2)
    np.testing.assert_allclose(gradcam.raw_maps, cam.raw_maps / 4.0, rtol=1e-4, atol=1e-6)


def test_unknown_layer_names_the_layer_and_suggests(keras):
    with pytest.raises(LayerError, match=r"no layer named 'convv' in the model; did you mean conv"):
        graph.build(gap_model(keras), "convv")


def test_layer_without_spatial_output_is_refused(keras):
    with pytest.raises(LayerError, match=r"layer 'gap' has output shape \(None, 4\)"):
        graph.build(gap_model(keras), "gap")


def test_ambiguous_bare_name_asks_for_the_path(keras):
    inputs = keras.Input((16, 16, 3))
    a = small_backbone(keras, "left")(inputs)
    b = small_backbone(keras, "right")(inputs)
    x = keras.layers.Concatenate()([a, b])
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(2)(x))
    with pytest.raises(LayerError, match=r"'conv_b' is ambiguous: left/conv_b, right/conv_b"):
        graph.build(model, "conv_b")


def test_cam_refuses_a_head_that_is_not_gap_dense(keras):
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, name="conv")(inputs)
    x = keras.layers.Flatten(name="flatten")(x)
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(x))
    with pytest.raises(CamNotApplicable) as info:
        CAM(graph.build(model))
    assert str(info.value) == (
        "CAM needs a global-average-pooling -> Dense head after layer 'conv', but the target "
        "layer feeds flatten (Flatten), not global average pooling; use gradcam instead"
    )
    GradCAM(graph.build(model))  # Grad-CAM explains any head


def test_cam_refuses_a_hidden_layer_between_pooling_and_classifier(keras):
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, name="conv")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(8, activation="relu", name="hidden")(x)
    model = keras.Model(inputs, keras.layers.Dense(3)(x))
    with pytest.raises(CamNotApplicable, match="the classifier's Dense layer"):
        CAM(graph.build(model))


def test_automatic_choice_is_the_last_spatial_map(keras):
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", name="early")(inputs)
    x = keras.layers.Conv2D(4, 3, padding="same", name="late")(x)
    x = keras.layers.MaxPooling2D(16, name="to_1x1")(x)  # 1x1: not a usable map
    x = keras.layers.Flatten()(x)
    model = keras.Model(inputs, keras.layers.Dense(2)(x))
    assert graph.build(model).layer == "late"
