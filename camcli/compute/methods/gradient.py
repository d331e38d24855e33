"""Gradient-based methods. ``gradients`` is d(score)/d(features), the score being the
explained class's pre-softmax logit (see `camcli.compute.methods.base.forward`)."""

from __future__ import annotations

import logging

import numpy as np

from camcli.compute.backend import tensorflow
from camcli.compute.methods.base import BaseCAM, first_component, forward
from camcli.errors import UsageProblem
from camcli.options import FINER_ALPHA, FINER_CLASSES

log = logging.getLogger("camcli")

#: Keeps divisions finite where a channel is all zero (the value pytorch-grad-cam uses).
EPS = 1e-7


class GradCAM(BaseCAM):
    """Selvaraju et al. 2017: channel weight = spatial mean of the gradient."""

    name = "gradcam"
    paper = "Selvaraju et al., Grad-CAM, ICCV 2017"
    cost = "1 forward + 1 backward"
    use_when = ("the default for CNNs (and with --layer): any model, any layer, "
                "class-specific")
    needs_gradients = True

    def weights(self, features, gradients, class_index):
        return tensorflow().reduce_mean(gradients, axis=[1, 2])


class GradCAMPlusPlus(BaseCAM):
    """Chattopadhay et al. 2018, in the closed form that follows from an exponential score:
    alpha = g^2 / (2 g^2 + sum_ij(A) g^3), weight = sum_ij alpha * ReLU(g)."""

    name = "gradcam++"
    paper = "Chattopadhay et al., Grad-CAM++, WACV 2018"
    cost = "1 forward + 1 backward"
    use_when = "several instances of the class in one photo; sharper than Grad-CAM"
    needs_gradients = True

    def weights(self, features, gradients, class_index):
        tf = tensorflow()
        squared, cubed = gradients ** 2, gradients ** 3
        activation_sums = tf.reduce_sum(features, axis=[1, 2], keepdims=True)
        alpha = squared / (2.0 * squared + activation_sums * cubed + EPS)
        alpha = tf.where(gradients != 0.0, alpha, tf.zeros_like(alpha))
        return tf.reduce_sum(alpha * tf.nn.relu(gradients), axis=[1, 2])


class XGradCAM(BaseCAM):
    """Fu et al. 2020: weight = sum_ij(g * A) / sum_ij(A)."""

    name = "xgradcam"
    paper = "Fu et al., Axiom-based Grad-CAM (XGrad-CAM), BMVC 2020"
    cost = "1 forward + 1 backward"
    use_when = "Grad-CAM's cost with weights that satisfy sensitivity and conservation"
    needs_gradients = True

    def weights(self, features, gradients, class_index):
        tf = tensorflow()
        return tf.reduce_sum(gradients * features, axis=[1, 2]) / (
            tf.reduce_sum(features, axis=[1, 2]) + EPS)


class HiResCAM(BaseCAM):
    """Draelos & Carin 2020: element-wise gradient x activation, summed over channels."""

    name = "hirescam"
    paper = "Draelos & Carin, HiResCAM, 2020"
    cost = "1 forward + 1 backward"
    use_when = "a faithful map: it shows exactly the locations that raise the score"
    needs_gradients = True

    def weights(self, features, gradients, class_index):
        return gradients


class LayerCAM(BaseCAM):
    """Jiang et al. 2021: element-wise ReLU(gradient) x activation; works on early layers."""

    name = "layercam"
    paper = "Jiang et al., LayerCAM, IEEE TIP 2021"
    cost = "1 forward + 1 backward"
    use_when = "early, high-resolution layers (--layer) for fine detail"
    needs_gradients = True

    def weights(self, features, gradients, class_index):
        return tensorflow().nn.relu(gradients)


class GradCAMElementWise(BaseCAM):
    """pytorch-grad-cam's element-wise Grad-CAM: sum_c ReLU(g * A)."""

    name = "gradcam-elementwise"
    paper = "pytorch-grad-cam's GradCAMElementWise (HiResCAM with a ReLU per element)"
    cost = "1 forward + 1 backward"
    use_when = "HiResCAM, keeping only the locations and channels that raise the score"
    needs_gradients = True

    def raw_map(self, features, gradients, class_index):
        positive = tensorflow().nn.relu(gradients * features)
        if self.smooth == "eigen":
            return first_component(positive)
        return tensorflow().reduce_sum(positive, axis=-1)


class ShapleyCAM(GradCAM):
    """Cai et al. 2025: weight = spatial mean of g - H.A / 2, H the Hessian of the score
    with respect to the activations, and the score the ReST score: the class's logit
    minus the cross-entropy of the class, ``2 z_c - logsumexp(z)``. H.A is one
    Hessian-vector product (a second backward pass); H is never formed."""

    name = "shapleycam"
    paper = "Cai et al., CAMs as Shapley value-based explainers (ShapleyCAM), 2025"
    cost = "1 forward + 2 backward"
    use_when = "Grad-CAM with the second-order term: steadier where the head is curved"
    needs_gradients = True

    def score(self, logits, class_index):
        tf = tensorflow()
        log_probabilities = tf.nn.log_softmax(logits, axis=-1)
        return (tf.gather(logits, class_index, batch_dims=1)
                + tf.gather(log_probabilities, class_index, batch_dims=1))

    def differentiate(self, x, requested):
        tf = tensorflow()
        with tf.GradientTape(persistent=True) as outer:
            with tf.GradientTape() as inner:
                features, probabilities, class_index, score = forward(
                    self.graph, x, requested, self.score)
            gradients = inner.gradient(score, features)
            # Per layer, d/dA of <g(A), A held fixed> = H.A: a Hessian-vector product.
            products = [None if g is None else tf.reduce_sum(
                g * tf.stop_gradient(tf.cast(f, g.dtype)))
                for f, g in zip(features, gradients, strict=True)]
        shapley = []
        for f, g, product in zip(features, gradients, products, strict=True):
            if g is None:
                shapley.append(None)
                continue
            hessian_a = outer.gradient(product, f,
                                       unconnected_gradients=tf.UnconnectedGradients.ZERO)
            shapley.append(g - 0.5 * tf.cast(hessian_a, g.dtype))
        del outer
        return features, probabilities, class_index, shapley


class FinerCAM(GradCAM):
    """Zhang et al. 2025: Grad-CAM of ``sum_j p_j (z_t - alpha z_j) / sum_j p_j`` over the
    ``classes`` classes whose logits are closest to the target's, ``p`` the softmax
    probabilities (inside the differentiated score, as pytorch-grad-cam's
    FinerWeightedTarget): what sets the class apart from its look-alikes."""

    name = "finercam"
    paper = "Zhang et al., Finer-CAM, CVPR 2025"
    cost = "1 forward + 1 backward"
    use_when = "fine-grained classes: what tells the class from its closest rivals"
    needs_gradients = True
    options = ("finer_alpha", "finer_classes")

    def __init__(self, graph, fuse: str = "mean", smooth: str | None = None, *,
                 finer_alpha: float = FINER_ALPHA, finer_classes: int = FINER_CLASSES):
        if finer_classes < 1:
            raise ValueError(f"finer_classes must be >= 1, got {finer_classes}")
        super().__init__(graph, fuse, smooth)
        if graph.num_classes < 2:
            raise UsageProblem("finercam compares the class with others, and the model has "
                               "one class; use gradcam")
        if finer_classes >= graph.num_classes:
            log.warning("finercam: the model has %d classes, so each is compared with the "
                        "%d others (not %d)", graph.num_classes, graph.num_classes - 1,
                        finer_classes)
            finer_classes = graph.num_classes - 1
        self.alpha, self.classes = float(finer_alpha), int(finer_classes)

    def score(self, logits, class_index):
        tf = tensorflow()
        target = tf.gather(logits, class_index, batch_dims=1)
        distance = tf.abs(logits - target[:, None])
        # The class itself is no rival: put it last.
        distance = tf.where(tf.one_hot(class_index, tf.shape(logits)[1]) > 0,
                            tf.fill(tf.shape(distance), float("inf")), distance)
        rivals = tf.math.top_k(-distance, k=self.classes).indices  # closest first
        weight = tf.gather(tf.nn.softmax(logits, axis=-1), rivals, batch_dims=1)
        rival_logits = tf.gather(logits, rivals, batch_dims=1)
        return (tf.reduce_sum(weight * (target[:, None] - self.alpha * rival_logits), axis=1)
                / tf.reduce_sum(weight, axis=1))


class RandomCAM(BaseCAM):
    """A baseline: channel weights drawn uniformly in [-1, 1] from ``seed``, once, so a
    map depends only on the image and the seed (not on the batch or the engine)."""

    name = "randomcam"
    paper = "baseline (pytorch-grad-cam's RandomCAM)"
    cost = "1 forward"
    use_when = "a baseline for the metrics, not an explanation: a method must beat it"
    class_specific = False
    baseline = True
    options = ("seed",)

    def __init__(self, graph, fuse: str = "mean", smooth: str | None = None, *,
                 seed: int = 0):
        super().__init__(graph, fuse, smooth)
        self.seed = int(seed)

    def weights(self, features, gradients, class_index):
        tf = tensorflow()
        channels = int(features.shape[-1])
        drawn = np.random.default_rng(self.seed).uniform(-1.0, 1.0, channels)
        return tf.broadcast_to(tf.constant(drawn, tf.float32)[None],
                               [tf.shape(features)[0], channels])
