"""Grad-CAM++, XGrad-CAM, HiResCAM, LayerCAM, EigenCAM and Score-CAM against NumPy
computations of their papers' formulas, plus the identities between methods."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from conftest import gap_model, seeded_weights
from test_methods import nonlinear_model, normalised, reference

from camcli.compute.methods import (
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
from camcli.compute.models import graph

CLASSES = np.array([0, 3, 1, 2], dtype=np.int32)  # a different class per image


@pytest.fixture(scope="module")
def batch():
    return np.random.default_rng(8).uniform(-1, 1, (4, 8, 8, 3)).astype("float32")


@pytest.fixture(scope="module")
def nonlinear(keras):
    model, weights = nonlinear_model(keras, hidden=6, seed=21)
    return graph.build(model, "conv"), weights


def expected_map(name, features, gradient, weights, image, class_index):
    if name == "gradcam++":
        # Chattopadhay et al., eq. 19 with an exponential score: alpha = g^2 / (2 g^2 +
        # sum_ab(A) g^3); weight = sum_ij alpha * ReLU(g). Only positive gradients count,
        # so alpha is needed only where g > 0 (no epsilon: on this model it is never 0/0).
        positive = gradient > 0
        g2, g3 = gradient ** 2, gradient ** 3
        denominator = 2 * g2 + features.sum(axis=(0, 1)) * g3
        assert (denominator[positive] != 0).all()
        alpha = np.divide(g2, denominator, out=np.zeros_like(g2), where=positive)
        return features @ (alpha * np.maximum(gradient, 0)).sum(axis=(0, 1))
    if name == "xgradcam":
        return features @ ((gradient * features).sum(axis=(0, 1)) / features.sum(axis=(0, 1)))
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


def _epsilon_effect(name, features, gradient) -> float:
    """How much an epsilon of 1e-7 in the method's denominators moves its weights, at most
    (relative): 1e-7 over the smallest denominator that matters."""
    if name == "gradcam++":
        positive = gradient > 0
        denominator = 2 * gradient ** 2 + features.sum(axis=(0, 1)) * gradient ** 3
        return 1e-7 / np.abs(denominator[positive]).min() if positive.any() else 0.0
    if name == "xgradcam":
        return 1e-7 / np.abs(features.sum(axis=(0, 1))).min()
    return 0.0


@pytest.mark.parametrize("method", [GradCAMPlusPlus, XGradCAM, HiResCAM, LayerCAM, EigenCAM,
                                    ScoreCAM])
def test_method_equals_its_papers_formula(nonlinear, batch, method):
    explained, weights = nonlinear
    result = method(explained)(batch, CLASSES)
    np.testing.assert_array_equal(result.class_index, CLASSES)
    for n, image in enumerate(batch):
        features, gradient, probabilities = reference(weights, image, CLASSES[n])
        want = expected_map(method.name, features, gradient, weights, image, CLASSES[n])
        # Grad-CAM++ and XGrad-CAM keep 1e-7 in their denominators (pytorch-grad-cam's
        # value, against 0/0); the references do not: a relative change of 1e-7 over the
        # smallest denominator.
        rtol = 1e-5 + _epsilon_effect(method.name, features, gradient)
        np.testing.assert_allclose(result.raw_maps[n], want, atol=1e-5, rtol=rtol)
        np.testing.assert_allclose(result.maps[n], normalised(want), atol=1e-5, rtol=2 * rtol)
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


@pytest.mark.parametrize("name", sorted(n for n, m in METHODS.items()
                                         if not m.reads_attention))  # (tests/test_attention)
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


@pytest.mark.parametrize("method, passes", [(EigenCAM, 1), (GradCAM, 3)])
def test_ranked_maps_are_each_rank_s_map(keras, batch, method, passes):
    """--top-k-maps: each rank's map is the method's map of that class; a method whose map
    does not depend on the class runs once, the others once per rank."""
    from camcli.compute.explainer import Explainer
    from camcli.compute.methods import TOP1
    from camcli.compute.targets import Targets

    explained = graph.build(gap_model(keras, seed=2))
    run = method(explained)
    calls = []

    def counted(images, classes):
        calls.append(len(images))
        return run(images, classes)

    counted.class_specific = method.class_specific
    explainer = Explainer(explained, counted, "none", (8, 8))
    result = explainer(batch, Targets(np.full(len(batch), TOP1, np.int32), top_k=3))
    assert len(calls) == passes
    for row, maps in enumerate(result.maps):
        assert [m.rank for m in maps] == [1, 2, 3]
        for explained_map in maps:
            alone = run(batch[row:row + 1], explained_map.class_index)
            np.testing.assert_allclose(explained_map.heatmap, alone.maps[0], atol=1e-5)


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
