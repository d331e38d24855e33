"""The methods that close the gap with pytorch-grad-cam (Ablation-CAM, Eigen-Grad-CAM,
element-wise Grad-CAM, KPCA-CAM, ShapleyCAM, Finer-CAM, FullGrad, RandomCAM) and the two
smoothings, each against a NumPy computation of its formula on a tiny model: the
forward pass, the gradients and the Hessian written out by hand (float64)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import seeded_weights
from test_methods import conv3x3_same_relu, nonlinear_model, normalised

from camcli.compute.methods import (
    KPCACAM,
    METHODS,
    AblationCAM,
    EigenCAM,
    EigenGradCAM,
    FinerCAM,
    FullGrad,
    GradCAM,
    GradCAMElementWise,
    RandomCAM,
    ScoreCAM,
    ShapleyCAM,
)
from camcli.compute.models import graph
from camcli.errors import UsageProblem

CLASSES = np.array([0, 3, 1, 2], dtype=np.int32)


@pytest.fixture(scope="module")
def batch():
    return np.random.default_rng(8).uniform(-1, 1, (4, 8, 8, 3)).astype("float32")


@pytest.fixture(scope="module")
def nonlinear(keras):
    model, weights = nonlinear_model(keras, hidden=6, seed=21)
    return graph.build(model, "conv"), Head(weights)


class Head:
    """`nonlinear_model` by hand: A = conv(x); z = ReLU(flat(A) W1 + b1) W2 + b2."""

    def __init__(self, weights):
        self.kernel, self.bias, self.w1, self.b1, self.w2, self.b2 = weights

    def features(self, image):
        return conv3x3_same_relu(image.astype(np.float64), self.kernel, self.bias)

    def logits(self, features):
        hidden = features.reshape(-1) @ self.w1 + self.b1
        return np.maximum(hidden, 0) @ self.w2 + self.b2

    def jacobian(self, features):
        """dz/dA, (classes, A's size): the head is linear where its ReLU pattern holds."""
        hidden = features.reshape(-1) @ self.w1 + self.b1
        return ((self.w1 * (hidden > 0)) @ self.w2).T

    def backprop(self, features, d_logits):
        """dS/dA for dS/dz = ``d_logits``."""
        return (d_logits @ self.jacobian(features)).reshape(features.shape)


def softmax(z):
    e = np.exp(z - z.max())
    return e / e.sum()


def component(matrix):
    """First principal component of (h, w, c) maps with camcli's sign rule, by SVD."""
    flat = matrix.reshape(-1, matrix.shape[2])
    centred = flat - flat.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    projection = centred @ vt[0]
    if (projection * centred.mean(axis=1)).sum() < 0:
        projection = -projection
    return projection.reshape(matrix.shape[:2])


def check(result, n, want, atol=1e-5, rtol=1e-4):
    """float32 against float64: ``atol`` relative to the map's largest value."""
    scale = max(1.0, float(np.abs(want).max()))
    np.testing.assert_allclose(result.raw_maps[n], want, atol=atol * scale, rtol=rtol)
    np.testing.assert_allclose(result.maps[n], normalised(want), atol=1e-4)


# -- one method each -----------------------------------------------------------------------


def test_ablationcam_weighs_each_channel_by_the_relative_drop(nonlinear, batch):
    explained, head = nonlinear
    assert explained.head is not None  # the layers above conv, alone
    result = AblationCAM(explained)(batch, CLASSES)
    for n, image in enumerate(batch):
        features = head.features(image)
        y = head.logits(features)[CLASSES[n]]
        weights = []
        for k in range(features.shape[2]):
            ablated = features.copy()
            ablated[:, :, k] = 0.0
            weights.append((y - head.logits(ablated)[CLASSES[n]]) / y)
        check(result, n, features @ np.array(weights))


def test_ablationcam_by_replacing_the_layer_equals_the_head(nonlinear, batch):
    """Without a separate upper model (a residual branch bypasses the layer), the ablated
    copies go through the whole model with the layer's output replaced: same weights."""
    import dataclasses

    explained, _ = nonlinear
    whole = dataclasses.replace(explained, head=None)
    np.testing.assert_allclose(AblationCAM(whole)(batch, CLASSES).raw_maps,
                               AblationCAM(explained)(batch, CLASSES).raw_maps, atol=1e-5)


def test_ablationcam_max_maps_ablates_the_highest_variance_channels(nonlinear, batch):
    explained, head = nonlinear
    result = AblationCAM(explained, max_maps=2)(batch[:1], 1)
    features = head.features(batch[0])
    y = head.logits(features)[1]
    weights = np.zeros(features.shape[2])
    for k in np.argsort(-features.var(axis=(0, 1)))[:2]:
        ablated = features.copy()
        ablated[:, :, k] = 0.0
        weights[k] = (y - head.logits(ablated)[1]) / y
    check(result, 0, features @ weights)


def test_ablationcam_counts_its_passes_on_the_progress_bar(nonlinear, batch):
    explained, _ = nonlinear
    seen = []

    class Bar:
        def __init__(self, total):
            seen.append(["total", total])

        def update(self, count):
            seen.append(count)

        def close(self):
            seen.append("closed")

    AblationCAM(explained, max_maps=2, progress=Bar)(batch, CLASSES)
    assert seen == [["total", 8], 2, 2, 2, 2, "closed"]


def test_ablationcam_without_a_separate_head_on_a_residual_block(keras, batch):
    inputs = keras.Input((8, 8, 3))
    a = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="a")(inputs)
    b = keras.layers.Conv2D(4, 3, padding="same", name="b")(a)
    x = keras.layers.Add(name="add")([a, b])
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(3, name="fc")(x))
    seeded_weights(model, seed=4)
    explained = graph.build(model, "b")
    assert explained.head is None  # "add" also reads "a": no model from "b" alone
    result = AblationCAM(explained)(batch[:2], 1)
    features = keras.Model(inputs, model.get_layer("b").output)(batch[:2]).numpy()
    logits = model(batch[:2]).numpy()[:, 1]
    kernel, bias = model.get_layer("fc").get_weights()
    for n in range(2):
        # GAP -> Dense is linear: zeroing channel k of b removes mean(b_k) * kernel[k, 1].
        drops = features[n].mean(axis=(0, 1)) * kernel[:, 1]
        np.testing.assert_allclose(result.raw_maps[n], features[n] @ (drops / logits[n]),
                                   atol=1e-5, rtol=1e-4)


def test_eigengradcam_projects_gradient_times_activation(nonlinear, batch):
    explained, head = nonlinear
    result = EigenGradCAM(explained)(batch, CLASSES)
    for n, image in enumerate(batch):
        features = head.features(image)
        gradient = head.backprop(features, np.eye(4)[CLASSES[n]])
        check(result, n, component(gradient * features), atol=1e-4)


def test_gradcam_elementwise_sums_positive_products(nonlinear, batch):
    explained, head = nonlinear
    result = GradCAMElementWise(explained)(batch, CLASSES)
    for n, image in enumerate(batch):
        features = head.features(image)
        gradient = head.backprop(features, np.eye(4)[CLASSES[n]])
        check(result, n, np.maximum(gradient * features, 0).sum(axis=2))


@pytest.mark.parametrize("kernel", ["sigmoid", "rbf"])
def test_kpcacam_is_the_first_kernel_principal_component(nonlinear, batch, kernel):
    """Kernel PCA by hand: the centred kernel matrix's top eigenvector times the square
    root of its eigenvalue (scikit-learn's defaults: gamma = 1 / channels, coef0 = 1)."""
    explained, head = nonlinear
    result = KPCACAM(explained, kernel=kernel)(batch, CLASSES)
    for n, image in enumerate(batch):
        features = head.features(image)
        flat = features.reshape(-1, features.shape[2])
        x = flat - flat.mean(axis=0)
        gamma = 1.0 / x.shape[1]
        if kernel == "sigmoid":
            k = np.tanh(gamma * x @ x.T + 1.0)
        else:
            squared = ((x[:, None, :] - x[None, :, :]) ** 2).sum(axis=2)
            k = np.exp(-gamma * squared)
        ones = np.full_like(k, 1.0 / len(k))
        centred_k = k - ones @ k - k @ ones + ones @ k @ ones
        values, vectors = np.linalg.eigh(centred_k)
        projection = vectors[:, -1] * np.sqrt(values[-1])
        if (projection * x.mean(axis=1)).sum() < 0:
            projection = -projection
        check(result, n, projection.reshape(features.shape[:2]), atol=1e-4, rtol=1e-3)


def test_kpcacam_does_not_depend_on_the_class(nonlinear, batch):
    explained, _ = nonlinear
    assert not KPCACAM.class_specific
    np.testing.assert_allclose(KPCACAM(explained)(batch, 0).maps,
                               KPCACAM(explained)(batch, 2).maps, atol=1e-6)


def test_shapleycam_subtracts_half_the_hessian_vector_product(nonlinear, batch):
    """ReST score s = z_c - CE(z, c) = 2 z_c - logsumexp(z): ds/dz = 2 e_c - p and
    d2s/dz2 = -(diag(p) - p p^T); the head is piecewise linear, so H = J^T (d2s/dz2) J."""
    explained, head = nonlinear
    result = ShapleyCAM(explained)(batch, CLASSES)
    for n, image in enumerate(batch):
        features = head.features(image)
        z = head.logits(features)
        p = softmax(z)
        jacobian = head.jacobian(features)
        gradient = head.backprop(features, 2 * np.eye(4)[CLASSES[n]] - p)
        curvature = -(np.diag(p) - np.outer(p, p))
        hessian_a = (jacobian.T @ curvature @ jacobian @ features.reshape(-1)).reshape(
            features.shape)
        assert np.abs(hessian_a).max() > 1e-3  # the second-order term is no zero here
        weights = (gradient - 0.5 * hessian_a).mean(axis=(0, 1))
        check(result, n, features @ weights)


@pytest.mark.parametrize("alpha, rivals", [(1.0, 3), (0.5, 2)])
def test_finercam_is_gradcam_of_the_weighted_difference_to_similar_classes(
        nonlinear, batch, alpha, rivals):
    explained, head = nonlinear
    result = FinerCAM(explained, finer_alpha=alpha, finer_classes=rivals)(batch, CLASSES)
    for n, image in enumerate(batch):
        features = head.features(image)
        z = head.logits(features)
        p = softmax(z)
        t = CLASSES[n]
        others = [j for j in np.argsort(np.abs(z - z[t]), kind="stable") if j != t][:rivals]
        # S = N / P, N = sum_j p_j (z_t - alpha z_j), P = sum_j p_j; dp_j/dz = p_j (e_j - p)
        eye = np.eye(4)
        numerator = sum(p[j] * (z[t] - alpha * z[j]) for j in others)
        total = sum(p[j] for j in others)
        d_numerator = sum(p[j] * (eye[j] - p) * (z[t] - alpha * z[j])
                          + p[j] * (eye[t] - alpha * eye[j]) for j in others)
        d_total = sum(p[j] * (eye[j] - p) for j in others)
        d_score = (d_numerator * total - numerator * d_total) / total ** 2
        gradient = head.backprop(features, d_score)
        check(result, n, features @ gradient.mean(axis=(0, 1)))


def test_finercam_compares_with_at_most_every_other_class(nonlinear, batch, caplog):
    explained, _ = nonlinear
    every = FinerCAM(explained, finer_classes=3)(batch, CLASSES)
    np.testing.assert_allclose(FinerCAM(explained, finer_classes=9)(batch, CLASSES).raw_maps,
                               every.raw_maps, atol=1e-6)
    assert "the model has 4 classes, so each is compared with the 3 others (not 9)" in \
        caplog.text


def test_randomcam_weights_come_from_the_seed_alone(nonlinear, batch):
    explained, head = nonlinear
    result = RandomCAM(explained, seed=7)(batch, CLASSES)
    drawn = np.random.default_rng(7).uniform(-1, 1, 3)
    for n, image in enumerate(batch):
        check(result, n, head.features(image) @ drawn)
    again = RandomCAM(explained, seed=7)(batch[::-1], 0)
    np.testing.assert_allclose(again.raw_maps, result.raw_maps[::-1], atol=1e-6)
    other = RandomCAM(explained, seed=8)(batch, CLASSES)
    assert not np.allclose(other.raw_maps, result.raw_maps)


# -- FullGrad ------------------------------------------------------------------------------


def fullgrad_model(keras):
    """conv (bias, linear) -> batch normalisation -> ReLU -> flatten -> dense."""
    inputs = keras.Input((6, 6, 3))
    x = keras.layers.Conv2D(2, 3, padding="same", name="conv")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.ReLU(name="relu")(x)
    x = keras.layers.Flatten()(x)
    model = keras.Model(inputs, keras.layers.Dense(3, name="fc")(x), name="fullgrad_net")
    seeded_weights(model, seed=12)
    bn = model.get_layer("bn")
    gamma, beta, mean, variance = bn.get_weights()
    bn.set_weights([gamma, beta, mean, np.abs(variance) + 0.5])
    return model


def scaled(term):
    """Each channel min-max scaled, as pytorch-grad-cam's scale_cam_image (1e-7)."""
    shifted = term - term.min(axis=(0, 1))
    return shifted / (1e-7 + shifted.max(axis=(0, 1)))


def test_fullgrad_sums_input_and_bias_gradients(keras):
    model = fullgrad_model(keras)
    assert FullGrad.own_layers(model) == ["conv", "bn"]
    explained = graph.build(model, FullGrad.own_layers(model))
    images = np.random.default_rng(2).uniform(-1, 1, (2, 6, 6, 3)).astype("float32")
    result = FullGrad(explained)(images, 2)
    kernel, conv_bias = [w.astype(np.float64) for w in model.get_layer("conv").get_weights()]
    bn = model.get_layer("bn")
    gamma, beta, mean, variance = [w.astype(np.float64) for w in bn.get_weights()]
    scale = gamma / np.sqrt(variance + bn.epsilon)
    bn_bias = beta - mean * scale
    fc = model.get_layer("fc").get_weights()[0].astype(np.float64)
    for n, image in enumerate(images.astype(np.float64)):
        padded = np.pad(image, ((1, 1), (1, 1), (0, 0)))
        conv = np.array([[np.tensordot(padded[i:i + 3, j:j + 3], kernel, axes=3) + conv_bias
                          for j in range(6)] for i in range(6)])
        normed = conv * scale + bn_bias
        g_bn = fc[:, 2].reshape(6, 6, 2) * (normed > 0)
        g_conv = g_bn * scale
        g_padded = np.zeros_like(padded)
        for i in range(6):
            for j in range(6):
                g_padded[i:i + 3, j:j + 3] += kernel @ g_conv[i, j]
        g_input = g_padded[1:-1, 1:-1]
        total = (scaled(np.abs(g_input * image)).sum(axis=2)
                 + scaled(np.abs(g_conv * conv_bias)).sum(axis=2)
                 + scaled(np.abs(g_bn * bn_bias)).sum(axis=2))
        want = total - total.min()
        np.testing.assert_allclose(result.raw_maps[n], want, atol=1e-4, rtol=1e-4)
        np.testing.assert_allclose(result.maps[n], want / want.max(), atol=1e-5)


def test_fullgrad_refuses_models_without_biases_and_fused_activations(keras):
    inputs = keras.Input((6, 6, 3))
    x = keras.layers.Conv2D(2, 3, use_bias=False, name="conv")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    bare = keras.Model(inputs, keras.layers.Dense(2)(x), name="bare")
    with pytest.raises(UsageProblem, match="fullgrad needs convolutions with a bias or batch "
                                           "normalisations, and model 'bare' has none"):
        FullGrad.own_layers(bare)
    x = keras.layers.Conv2D(2, 3, activation="tanh", name="tanhy")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    tanh = keras.Model(inputs, keras.layers.Dense(2)(x))
    with pytest.raises(UsageProblem, match="layer 'tanhy' applies a 'tanh' activation"):
        FullGrad(graph.build(tanh, FullGrad.own_layers(tanh)))


# -- smoothing -----------------------------------------------------------------------------


def test_aug_smoothing_averages_six_variants_brought_back(nonlinear, batch):
    """pytorch-grad-cam's aug_smooth: mirror or not x brightness 0.9, 1, 1.1; each
    variant's normalised map, mirrored back, averaged; the class is the plain image's."""
    explained, head = nonlinear
    result = GradCAM(explained, smooth="aug")(batch, CLASSES)
    plain = GradCAM(explained)(batch, CLASSES)
    np.testing.assert_array_equal(result.class_index, CLASSES)
    np.testing.assert_allclose(result.probabilities, plain.probabilities, atol=1e-6)
    for n, image in enumerate(batch):
        maps = []
        for mirror in (False, True):
            for factor in (0.9, 1.0, 1.1):
                variant = (image[:, ::-1] if mirror else image) * factor
                features = head.features(variant)
                gradient = head.backprop(features, np.eye(4)[CLASSES[n]])
                one = normalised(features @ gradient.mean(axis=(0, 1)))
                maps.append(one[:, ::-1] if mirror else one)
        mean = np.mean(maps, axis=0)
        np.testing.assert_allclose(result.maps[n], mean / mean.max(), atol=1e-4)


def test_aug_smoothing_explains_the_plain_image_s_top_class(nonlinear, batch):
    explained, _ = nonlinear
    top = GradCAM(explained)(batch).class_index
    calls = []
    method = GradCAM(explained, smooth="aug")
    original = method.compute

    def spied(images, classes):
        calls.append((len(images), np.asarray(classes).copy()))
        return original(images, classes)

    method.compute = spied
    method(batch)
    assert [c[0] for c in calls] == [4, 20]  # the plain images, then 5 variants of each
    np.testing.assert_array_equal(calls[1][1], np.tile(top, 5))


def test_eigen_smoothing_projects_the_weighted_maps(nonlinear, batch):
    explained, head = nonlinear
    result = GradCAM(explained, smooth="eigen")(batch, CLASSES)
    for n, image in enumerate(batch):
        features = head.features(image)
        gradient = head.backprop(features, np.eye(4)[CLASSES[n]])
        check(result, n, component(features * gradient.mean(axis=(0, 1))), atol=1e-4)


def test_eigen_smoothing_of_scorecam_and_elementwise(nonlinear, batch):
    explained, head = nonlinear
    features = head.features(batch[0])
    gradient = head.backprop(features, np.eye(4)[1])
    result = GradCAMElementWise(explained, smooth="eigen")(batch[:1], 1)
    check(result, 0, component(np.maximum(gradient * features, 0)), atol=1e-4)
    plain = ScoreCAM(explained)(batch[:1], 1)
    smooth = ScoreCAM(explained, smooth="eigen")(batch[:1], 1)
    assert not np.allclose(plain.raw_maps, smooth.raw_maps)


@pytest.mark.parametrize("method", [EigenCAM, EigenGradCAM, KPCACAM, FullGrad])
def test_eigen_smoothing_is_refused_where_undefined(nonlinear, method):
    explained, _ = nonlinear
    with pytest.raises(UsageProblem, match=f"smooth.* eigen does not apply to {method.name}"):
        method(explained, smooth="eigen")


def test_sixteen_methods_and_three_that_read_attention():
    assert len(METHODS) == 21
    assert {"ablationcam", "eigengradcam", "gradcam-elementwise", "kpcacam", "shapleycam",
            "finercam", "fullgrad", "randomcam"} <= set(METHODS)
    assert [m.name for m in METHODS.values() if m.reads_attention] == [
        "rollout", "gradrollout", "legrad"]
    assert [m.name for m in METHODS.values() if m.baseline] == ["randomcam"]


def two_conv_model(keras):
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(3, 3, padding="same", activation="relu", name="first")(inputs)
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="second")(x)
    x = keras.layers.Flatten()(x)
    model = keras.Model(inputs, keras.layers.Dense(4, name="fc")(x))
    seeded_weights(model, seed=6, scale=0.4)
    return model


@pytest.mark.parametrize("method", [ShapleyCAM, FinerCAM, GradCAMElementWise, EigenGradCAM,
                                    KPCACAM, RandomCAM])
def test_new_methods_fuse_layers_like_every_method(keras, batch, method):
    """Several --layer: each layer's map normalised, then their mean, normalised again."""
    model = two_conv_model(keras)
    fused = method(graph.build(model, ["first", "second"]))(batch, CLASSES)
    alone = [method(graph.build(model, name))(batch, CLASSES).maps
             for name in ("first", "second")]
    mean = (alone[0] + alone[1]) / 2
    peak = mean.max(axis=(1, 2), keepdims=True)
    np.testing.assert_allclose(fused.maps, np.divide(mean, peak, out=np.zeros_like(mean),
                                                     where=peak > 0), atol=1e-5)


def test_ablationcam_refuses_to_fuse(keras):
    with pytest.raises(UsageProblem, match="ablationcam cannot fuse several layers: each "
                                           "layer would need its own ablated passes"):
        AblationCAM(graph.build(two_conv_model(keras), ["first", "second"]))
