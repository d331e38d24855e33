"""CAM and Grad-CAM against NumPy references computed from the papers' formulas."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import gap_model, seeded_weights

from camcli.compute.methods import CAM, TOP1, GradCAM
from camcli.compute.models import graph


def conv3x3_same_relu(x, kernel, bias):
    """NumPy 3x3 'same' convolution + ReLU, written out: x (h, w, cin), kernel (3, 3, cin, c)."""
    h, w, _ = x.shape
    padded = np.pad(x, ((1, 1), (1, 1), (0, 0)))
    out = np.zeros((h, w, kernel.shape[-1]))
    for i in range(h):
        for j in range(w):
            out[i, j] = np.tensordot(padded[i:i + 3, j:j + 3, :], kernel, axes=3) + bias
    return np.maximum(out, 0)


def normalised(raw):
    positive = np.maximum(raw, 0)
    peak = positive.max()
    return positive / peak if peak > 0 else positive


def nonlinear_model(keras, hidden: int, seed: int):
    """conv (the target, "conv") -> flatten -> dense(ReLU) -> dense(softmax): a head with
    real, position-dependent gradients. Returns the model and its float64 weights."""
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(3, 3, padding="same", activation="relu", name="conv")(inputs)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(hidden, activation="relu")(x)
    outputs = keras.layers.Dense(4, activation="softmax")(x)
    model = keras.Model(inputs, outputs)
    seeded_weights(model, seed=seed, scale=0.4)
    return model, [w.astype(np.float64) for w in model.get_weights()]


def reference(weights, image, class_index):
    """For `nonlinear_model`, by hand in float64 NumPy (chain rule, not TensorFlow):
    the features A, the gradient G = d logit / d A, and the probabilities."""
    kernel, bias, w1, b1, w2, b2 = weights
    features = conv3x3_same_relu(image.astype(np.float64), kernel, bias)
    hidden = features.reshape(-1) @ w1 + b1
    logits = np.maximum(hidden, 0) @ w2 + b2
    gradient = (w1 @ (w2[:, class_index] * (hidden > 0))).reshape(features.shape)
    probabilities = np.exp(logits - logits.max())
    return features, gradient, probabilities / probabilities.sum()


@pytest.fixture(scope="module")
def batch():
    return np.random.default_rng(1).uniform(-1, 1, (4, 8, 8, 3)).astype("float32")


def test_cam_equals_numpy_reference(keras, batch):
    model = gap_model(keras)
    kernel, bias, dense_w, _ = [w.astype(np.float64) for w in model.get_weights()]
    classes = np.array([2, 0, 1, 2], dtype=np.int32)  # a different class per image
    result = CAM(graph.build(model))(batch, classes)
    for n, image in enumerate(batch):
        features = conv3x3_same_relu(image.astype(np.float64), kernel, bias)
        expected = features @ dense_w[:, classes[n]]  # Zhou et al.: sum_c w_c^k A_c
        np.testing.assert_allclose(result.raw_maps[n], expected, atol=1e-5)
        np.testing.assert_allclose(result.maps[n], normalised(expected), atol=1e-5)
    np.testing.assert_array_equal(result.class_index, classes)


def test_gradcam_equals_manual_backprop_through_a_nonlinear_head(keras, batch):
    model, weights = nonlinear_model(keras, hidden=5, seed=3)
    classes = np.array([0, 3, 1, 2], dtype=np.int32)

    result = GradCAM(graph.build(model, "conv"))(batch, classes)
    for n, image in enumerate(batch):
        features, grad, _ = reference(weights, image, classes[n])
        alpha = grad.mean(axis=(0, 1))  # Selvaraju et al.: spatial mean of the gradient
        expected = features @ alpha
        np.testing.assert_allclose(result.raw_maps[n], expected, atol=1e-5)
        np.testing.assert_allclose(result.maps[n], normalised(expected), atol=1e-5)


def test_gradcam_is_proportional_to_cam_on_a_gap_dense_head(keras, batch):
    # d logit_k / d A_ijc = W_ck / (h*w) for GAP -> Dense, so Grad-CAM = CAM / (h*w).
    explained = graph.build(gap_model(keras, classes=5, seed=7))
    cam = CAM(explained)(batch, TOP1)
    gradcam = GradCAM(explained)(batch, TOP1)
    np.testing.assert_allclose(gradcam.raw_maps, cam.raw_maps / 64.0, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(gradcam.maps, cam.maps, atol=1e-5)
    np.testing.assert_array_equal(gradcam.class_index, cam.class_index)


def test_gradcam_uses_the_pre_softmax_logit(keras, batch):
    # The same network with the softmax inside the Dense layer, as a separate Activation
    # layer, or absent must give identical Grad-CAM maps: the score is the logit.
    def variant(kind):
        inputs = keras.Input((8, 8, 3))
        x = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inputs)
        x = keras.layers.Flatten()(x)
        if kind == "dense_softmax":
            outputs = keras.layers.Dense(3, activation="softmax")(x)
        elif kind == "activation_layer":
            outputs = keras.layers.Activation("softmax")(keras.layers.Dense(3)(x))
        else:
            outputs = keras.layers.Dense(3)(x)
        model = keras.Model(inputs, outputs)
        seeded_weights(model, seed=11)
        return graph.build(model)

    graphs = {k: variant(k) for k in ("dense_softmax", "activation_layer", "linear")}
    assert graphs["dense_softmax"].output_kind == "softmax"
    assert graphs["activation_layer"].output_kind == "softmax"
    assert graphs["linear"].output_kind == "raw"
    classes = np.array([0, 1, 2, 1], dtype=np.int32)
    maps = {k: GradCAM(g)(batch, classes).raw_maps for k, g in graphs.items()}
    np.testing.assert_allclose(maps["dense_softmax"], maps["linear"], atol=1e-5)
    np.testing.assert_allclose(maps["activation_layer"], maps["linear"], atol=1e-5)
    probabilities = GradCAM(graphs["dense_softmax"])(batch, classes).probabilities
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)


def test_top1_is_the_default_class(keras, batch):
    model = gap_model(keras, classes=6, seed=5)
    result = CAM(graph.build(model))(batch)
    expected = np.argmax(model.predict(batch, verbose=0), axis=1)
    np.testing.assert_array_equal(result.class_index, expected)
    np.testing.assert_allclose(result.probabilities, model.predict(batch, verbose=0), atol=1e-5)


def test_a_map_without_positive_evidence_is_zero_not_nan(keras, batch):
    model = gap_model(keras)
    kernel, bias, dense_w, dense_b = model.get_weights()
    model.set_weights([kernel, np.full_like(bias, -100.0), dense_w, dense_b])  # ReLU kills all
    for method in (CAM, GradCAM):
        result = method(graph.build(model))(batch)
        assert np.all(result.maps == 0.0)
        assert not np.isnan(result.maps).any()


def test_batched_equals_one_by_one(keras, batch):
    explained = graph.build(gap_model(keras, seed=2))
    for method in (CAM, GradCAM):
        together = method(explained)(batch)
        for n in range(len(batch)):
            alone = method(explained)(batch[n:n + 1])
            np.testing.assert_allclose(alone.maps[0], together.maps[n], atol=1e-5)
