"""Grad-CAM++, XGrad-CAM, HiResCAM, LayerCAM, EigenCAM and Score-CAM against NumPy
computations of their papers' formulas, plus the identities between methods."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from conftest import gap_model, seeded_weights
from test_methods import nonlinear_model, normalised, reference

from camcli.methods import (
    CAM,
    METHODS,
    EigenCAM,
    GradCAM,
    GradCAMPlusPlus,
    HiResCAM,
    LayerCAM,
    ScoreCAM,
    XGradCAM,
)
from camcli.models import graph

CLASSES = np.array([0, 3, 1, 2], dtype=np.int32)  # a different class per image


@pytest.fixture(scope="module")
def batch():
    return np.random.default_rng(8).uniform(-1, 1, (4, 8, 8, 3)).astype("float32")


@pytest.fixture(scope="module")
def nonlinear(keras):
    model, weights = nonlinear_model(keras, hidden=6, seed=21)
    return graph.build(model, "conv"), weights


def expected_map(name, features, gradient, weights, image, class_index):
    eps = 1e-7
    if name == "gradcam++":
        g2, g3 = gradient ** 2, gradient ** 3
        alpha = g2 / (2 * g2 + features.sum(axis=(0, 1)) * g3 + eps)
        alpha = np.where(gradient != 0, alpha, 0)
        return features @ (alpha * np.maximum(gradient, 0)).sum(axis=(0, 1))
    if name == "xgradcam":
        return features @ ((gradient * features).sum(axis=(0, 1))
                           / (features.sum(axis=(0, 1)) + eps))
    if name == "hirescam":
        return (gradient * features).sum(axis=2)
    if name == "layercam":
        return (np.maximum(gradient, 0) * features).sum(axis=2)
    if name == "eigencam":
        flat = features.reshape(-1, features.shape[2])
        centred = flat - flat.mean(axis=0)
        _, _, vt = np.linalg.svd(centred, full_matrices=False)
        projection = centred @ vt[0]
        if (projection * centred.mean(axis=1)).sum() < 0:
            projection = -projection
        return projection.reshape(features.shape[:2])
    if name == "scorecam":
        scores = []
        for k in range(features.shape[2]):
            channel = features[:, :, k]  # same size as the input: no upsampling needed
            span = channel.max() - channel.min()
            mask = (channel - channel.min()) / span if span > 0 else np.zeros_like(channel)
            _, _, probabilities = reference(weights, image * mask[:, :, None], class_index)
            scores.append(probabilities[class_index])
        return features @ np.array(scores)
    raise AssertionError(name)


@pytest.mark.parametrize("method", [GradCAMPlusPlus, XGradCAM, HiResCAM, LayerCAM, EigenCAM,
                                    ScoreCAM])
def test_method_equals_its_papers_formula(nonlinear, batch, method):
    explained, weights = nonlinear
    result = method(explained)(batch, CLASSES)
    np.testing.assert_array_equal(result.class_index, CLASSES)
    for n, image in enumerate(batch):
        features, gradient, probabilities = reference(weights, image, CLASSES[n])
        want = expected_map(method.name, features, gradient, weights, image, CLASSES[n])
        np.testing.assert_allclose(result.raw_maps[n], want, atol=1e-5, rtol=1e-5)
        np.testing.assert_allclose(result.maps[n], normalised(want), atol=1e-5)
        np.testing.assert_allclose(result.probabilities[n], probabilities, atol=1e-6)


def test_scorecam_upsamples_like_opencv(keras, batch):
    # A 4x4 target layer: the masks are its maps resized to 8x8 (bilinear, half-pixel
    # centres, as cv2.resize), then min-max normalised.
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(3, 3, padding="same", activation="relu", name="conv")(inputs)
    x = keras.layers.MaxPooling2D(name="pool")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(x))
    seeded_weights(model, seed=5)
    explained = graph.build(model, "pool")
    result = ScoreCAM(explained)(batch[:1], 2)
    probe = keras.Model(model.inputs, model.get_layer("pool").output)
    features = probe([batch[:1]]).numpy()[0]
    scores = []
    for k in range(3):
        mask = cv2.resize(features[:, :, k], (8, 8), interpolation=cv2.INTER_LINEAR)
        mask = (mask - mask.min()) / (mask.max() - mask.min())
        masked = batch[:1] * mask[None, :, :, None]
        scores.append(model.predict(masked, verbose=0)[0, 2])
    np.testing.assert_allclose(result.raw_maps[0], features @ np.array(scores), atol=1e-5)


def test_hirescam_is_proportional_to_cam_on_a_gap_dense_head(keras, batch):
    explained = graph.build(gap_model(keras, classes=5, seed=9))
    cam, hires = CAM(explained)(batch), HiResCAM(explained)(batch)
    np.testing.assert_allclose(hires.raw_maps, cam.raw_maps / 64.0, rtol=1e-5, atol=1e-7)


def test_faster_scorecam_with_every_channel_equals_scorecam(keras, batch):
    explained = graph.build(gap_model(keras, channels=6, seed=3))
    full = ScoreCAM(explained)(batch, CLASSES % 3)
    capped = ScoreCAM(explained, max_maps=6, scorecam_batch=4)(batch, CLASSES % 3)
    np.testing.assert_allclose(capped.raw_maps, full.raw_maps, atol=1e-6)
    fewer = ScoreCAM(explained, max_maps=2)(batch, CLASSES % 3)
    assert not np.allclose(fewer.raw_maps, full.raw_maps)


def test_faster_scorecam_keeps_the_highest_variance_channels(keras, batch):
    model = gap_model(keras, channels=6, seed=3)
    explained = graph.build(model)
    capped = ScoreCAM(explained, max_maps=2)(batch[:1], 1)
    conv = keras.Model(model.inputs, model.get_layer("conv").output)
    features = conv([batch[:1]]).numpy()[0]
    keep = np.argsort(-features.var(axis=(0, 1)))[:2]
    scores = []
    for k in keep:
        channel = features[:, :, k]
        mask = (channel - channel.min()) / (channel.max() - channel.min())
        scores.append(model.predict(batch[:1] * mask[None, :, :, None], verbose=0)[0, 1])
    np.testing.assert_allclose(capped.raw_maps[0], features[:, :, keep] @ np.array(scores),
                               atol=1e-5)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_batched_equals_one_by_one(keras, batch, name):
    explained = graph.build(gap_model(keras, seed=2))
    method = METHODS[name](explained)
    together = method(batch, CLASSES % 3)
    for n in range(len(batch)):
        alone = method(batch[n:n + 1], CLASSES[n] % 3)
        np.testing.assert_allclose(alone.maps[0], together.maps[n], atol=1e-5)


def test_eigencam_does_not_depend_on_the_class(keras, batch):
    explained = graph.build(gap_model(keras, seed=2))
    first, second = EigenCAM(explained)(batch, 0), EigenCAM(explained)(batch, 2)
    np.testing.assert_allclose(first.maps, second.maps, atol=1e-6)
    assert not EigenCAM.class_specific and GradCAM.class_specific


def test_scorecam_reports_progress(keras, batch):
    updates = []

    class Bar:
        def __init__(self, total):
            updates.append(("total", total))

        def update(self, n):
            updates.append(("update", n))

        def close(self):
            updates.append(("close",))

    explained = graph.build(gap_model(keras, channels=4))
    ScoreCAM(explained, scorecam_batch=3, progress=Bar)(batch[:2])
    assert updates == [("total", 8), ("update", 3), ("update", 1), ("update", 3),
                       ("update", 1), ("close",)]


def test_scorecam_rejects_bad_settings(keras):
    explained = graph.build(gap_model(keras))
    with pytest.raises(ValueError, match="max_maps must be >= 1, got 0"):
        ScoreCAM(explained, max_maps=0)
    with pytest.raises(ValueError, match="scorecam_batch must be >= 1, got 0"):
        ScoreCAM(explained, scorecam_batch=0)
