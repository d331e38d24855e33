"""Guided Backpropagation and Guided Grad-CAM against a forward pass and a guided backward
pass written out in NumPy, on a tiny ReLU network (a ReLU inside a convolution, then a
ReLU6 layer)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import seeded_weights
from test_methods import conv3x3_same_relu, normalised

from camcli.compute.methods import METHODS, GuidedBackprop, GuidedGradCAM
from camcli.compute.methods.guided import capped
from camcli.compute.models import graph
from camcli.errors import UsageProblem

CLASSES = np.array([0, 2, 1], np.int32)


@pytest.fixture(scope="module")
def relu_net(keras):
    """conv (3x3, same, ReLU) -> flatten -> dense -> ReLU6 -> dense (softmax)."""
    inputs = keras.Input((4, 4, 3))
    x = keras.layers.Conv2D(3, 3, padding="same", activation="relu", name="conv")(inputs)
    x = keras.layers.Flatten(name="flat")(x)
    x = keras.layers.Dense(5, name="hidden")(x)
    x = keras.layers.ReLU(6.0, name="relu6")(x)
    outputs = keras.layers.Dense(3, activation="softmax", name="fc")(x)
    model = keras.Model(inputs, outputs, name="relu_net")
    seeded_weights(model, seed=11, scale=0.6)
    return model, [w.astype(np.float64) for w in model.get_weights()]


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(3).uniform(-2, 2, (3, 4, 4, 3)).astype("float32")


def by_percentile(raw):
    """The shown map: divided by its 99th percentile (linear interpolation between the
    sorted values), capped at 1."""
    values = np.sort(raw.ravel())
    position = 0.99 * (values.size - 1)
    low = int(np.floor(position))
    scale = values[low] + (position - low) * (values[low + 1] - values[low])
    scale = scale if scale > 0 else values[-1]  # mostly zeros: by the maximum
    return np.minimum(raw / scale, 1.0) if scale > 0 else raw


def conv_input_gradient(upstream, kernel):
    """d/dx of a 3x3 'same' convolution, given d/d(output) ``upstream`` (h, w, cout)."""
    h, w, _ = upstream.shape
    padded = np.zeros((h + 2, w + 2, kernel.shape[2]))
    for i in range(h):
        for j in range(w):
            # out[i, j] = sum over (dy, dx, ci) of x_padded[i + dy, j + dx, ci] k[dy, dx, ci]
            padded[i:i + 3, j:j + 3] += kernel @ upstream[i, j]
    return padded[1:-1, 1:-1]


def by_hand(weights, image, class_index, guided=True):
    """The forward pass, then the backward pass of the class's logit to the input, each
    rectifier letting through only where its input is in its open range and (guided)
    the gradient arriving is positive. Returns the input gradient, the conv features and
    the gradient at them (for Grad-CAM), and how often each rule cut something."""
    kernel, bias, w1, b1, w2, _ = weights
    padded = np.pad(image.astype(np.float64), ((1, 1), (1, 1), (0, 0)))
    before = np.array([[np.tensordot(padded[i:i + 3, j:j + 3], kernel, axes=3) + bias
                        for j in range(4)] for i in range(4)])
    features = np.maximum(before, 0)
    np.testing.assert_allclose(features, conv3x3_same_relu(image, kernel, bias))
    hidden = features.reshape(-1) @ w1 + b1
    cuts = {"capped": int((hidden >= 6).sum()), "negative": 0}
    upstream = w2[:, class_index]
    through = (hidden > 0) & (hidden < 6)
    plain_at_features = (w1 @ (upstream * through)).reshape(features.shape)
    if guided:
        cuts["negative"] += int(((upstream < 0) & through).sum())
        through = through & (upstream > 0)
    at_features = (w1 @ (upstream * through)).reshape(features.shape)
    through = before > 0
    if guided:
        cuts["negative"] += int(((at_features < 0) & through).sum())
        through = through & (at_features > 0)
    return (conv_input_gradient(at_features * through, kernel), features, plain_at_features,
            cuts)


def test_guided_backprop_equals_the_hand_written_backward_pass(keras, relu_net, images):
    model, weights = relu_net
    result = GuidedBackprop(graph.build(model, GuidedBackprop.own_layers(model)))(images,
                                                                                   CLASSES)
    np.testing.assert_array_equal(result.class_index, CLASSES)
    cut = {"capped": 0, "negative": 0}
    for n, image in enumerate(images):
        gradient, _, _, cuts = by_hand(weights, image, CLASSES[n])
        cut = {k: cut[k] + cuts[k] for k in cut}
        expected = np.abs(gradient).sum(axis=-1)
        np.testing.assert_allclose(result.raw_maps[n], expected, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(result.maps[n], by_percentile(expected), atol=1e-5)
        # Not the plain gradient: the guided rule changed this image's map.
        plain = np.abs(by_hand(weights, image, CLASSES[n], guided=False)[0]).sum(axis=-1)
        assert not np.allclose(plain, expected)
    # The network exercises both rules: a ReLU6 capped, negative gradients cut.
    assert cut["capped"] > 0 and cut["negative"] > 0


def test_the_plain_gradient_comes_back_after_a_guided_pass(keras, relu_net, images):
    """The guided rectifiers are in place only for the method's own pass: Grad-CAM,
    traced after it on the same layers, gets the plain gradient."""
    from camcli.compute.methods import GradCAM

    model, weights = relu_net
    GuidedBackprop(graph.build(model, GuidedBackprop.own_layers(model)))(images, CLASSES)
    assert model.get_layer("relu6").__dict__.get("call") is None
    assert model.get_layer("conv").activation.__name__ == "relu"
    result = GradCAM(graph.build(model, "conv"))(images, CLASSES)
    for n, image in enumerate(images):
        _, features, plain, _ = by_hand(weights, image, CLASSES[n])
        np.testing.assert_allclose(result.maps[n],
                                   normalised(features @ plain.mean(axis=(0, 1))), atol=1e-5)


def test_guided_gradcam_is_the_guided_map_times_gradcam(keras, relu_net, images):
    model, weights = relu_net
    result = GuidedGradCAM(graph.build(model, "conv"))(images, CLASSES)
    for n, image in enumerate(images):
        gradient, features, plain, _ = by_hand(weights, image, CLASSES[n])
        cam = normalised(features @ plain.mean(axis=(0, 1)))  # Grad-CAM, 4x4 like the input
        expected = cam * np.abs(gradient).sum(axis=-1)
        np.testing.assert_allclose(result.raw_maps[n], expected, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(result.maps[n], by_percentile(expected), atol=1e-5)


def test_guided_methods_need_rectifiers(keras, relu_net):
    inputs = keras.Input((4, 4, 3))
    x = keras.layers.Conv2D(2, 3, padding="same", activation="gelu", name="conv")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(2)(x), name="smooth_net")
    refusal = "the model's ReLUs, and this model has none"
    with pytest.raises(UsageProblem, match=f"^guidedbackprop guides the gradient through "
                       f"{refusal}"):
        GuidedBackprop.own_layers(model)
    with pytest.raises(UsageProblem, match=f"^guided-gradcam guides the gradient through "
                       f"{refusal}"):
        GuidedGradCAM(graph.build(model, "conv"))
    # The map is the gradient to the model's input: its first layer's input.
    assert GuidedBackprop.own_layers(relu_net[0]) == ["conv:input"]
    assert {"guidedbackprop", "guided-gradcam"} <= set(METHODS)


def test_a_pixel_map_is_shown_by_its_99th_percentile():
    raw = np.zeros((2, 10, 10), np.float32)
    raw[0] = np.arange(100).reshape(10, 10)  # percentile 99: 98.01
    raw[1, 0, 0] = 5.0  # 99 zeros: the percentile is 0, so the maximum
    shown = capped(raw)
    np.testing.assert_allclose(shown[0], np.minimum(raw[0] / 98.01, 1.0), rtol=1e-6)
    assert shown[0].max() == 1.0 and (shown[0] == 1.0).sum() == 1  # 99 only
    np.testing.assert_array_equal(shown[1], raw[1] / 5.0)
    np.testing.assert_array_equal(capped(np.zeros((1, 3, 3))), np.zeros((1, 3, 3)))
