"""FullGrad — Srinivas & Fleuret, "Full-Gradient Representation for Neural Network
Visualization", NeurIPS 2019.

The map sums the input-gradient term ``|d(score)/dx * x|`` and, for every convolution
with a bias and every batch normalisation, ``|b * d(score)/d(output)|``: a layer's bias
(a batch normalisation's is ``beta - mean * gamma / sqrt(variance + epsilon)``) times the
gradient of its output. Each channel of each term is min-max scaled, the channels are
summed and resized (bilinear) to the input, and the terms are summed, as in the paper's
code and pytorch-grad-cam. The paper's post-processing takes the absolute value, as
here. There is no target layer: the method chooses its own (`FullGrad.own_layers`).
"""

from __future__ import annotations

from camcli.compute.backend import tensorflow
from camcli.compute.methods.base import BaseCAM, forward, normalise
from camcli.compute.models.addresses import graph_layers
from camcli.errors import UsageProblem

#: Keeps a constant channel's scaling finite (pytorch-grad-cam's value).
EPS = 1e-7


class FullGrad(BaseCAM):
    name = "fullgrad"
    paper = "Srinivas & Fleuret, Full-Gradient Representation, NeurIPS 2019"
    cost = "1 forward + 1 backward (to the input and every bias)"
    use_when = "CNNs: input-resolution detail from every layer's bias; no --layer"
    needs_gradients = True
    no_eigen = "it sums the input's and every bias's terms, not weighted feature maps"
    own_layers_are = "every convolution's bias and batch normalisation"
    copies_weights = True

    def __init__(self, graph, fuse: str = "mean", smooth: str | None = None):
        super().__init__(graph, fuse, smooth)
        self._biases, self._relu = bias_terms(graph)

    @classmethod
    def own_layers(cls, model) -> list[str]:
        """Every convolution with a bias and every batch normalisation of ``model`` with a
        4-D output, in the order of the forward pass.

        Raises:
            UsageProblem: the model has none.
        """
        import keras

        kinds = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D,
                 keras.layers.SeparableConv2D, keras.layers.BatchNormalization)
        found = [address for address, layer, shape in graph_layers(model)
                 if isinstance(layer, kinds) and shape is not None and len(shape) == 4
                 and (isinstance(layer, keras.layers.BatchNormalization)
                      or getattr(layer, "use_bias", False))]
        if not found:
            raise UsageProblem(
                f"fullgrad needs convolutions with a bias or batch normalisations, and model "
                f"{model.name!r} has none with a spatial output (FullGrad is defined for "
                "CNNs); use another method")
        return found

    def explain_step(self, x, requested):
        tf = tensorflow()
        with tf.GradientTape() as tape:
            tape.watch(x)
            features, probabilities, class_index, score = forward(self.graph, x, requested)
        gradients = tape.gradient(score, [x, *features])
        size = tf.shape(x)[1:3]
        total = tf.reduce_sum(_scaled(tf.abs(gradients[0] * x)), axis=-1)
        for feature, gradient, bias, relu in zip(features, gradients[1:], self._biases,
                                                 self._relu, strict=True):
            if gradient is None:
                continue
            feature, gradient = tf.cast(feature, tf.float32), tf.cast(gradient, tf.float32)
            if relu:  # the gradient at the biased output, before the layer's own ReLU
                gradient = tf.where(feature > 0, gradient, tf.zeros_like(gradient))
            term = tf.reduce_sum(_scaled(tf.abs(gradient * bias)), axis=-1, keepdims=True)
            total += tf.image.resize(term, size, method="bilinear")[..., 0]
        raw = total - tf.reduce_min(total, axis=[1, 2], keepdims=True)
        zero = tf.zeros([len(self.graph.layers), tf.shape(x)[0]], tf.bool)
        return probabilities, class_index, raw, normalise(raw), zero


def bias_terms(graph) -> tuple[list, list[bool]]:
    """Per target layer of ``graph``: its bias (a batch normalisation's is ``beta - mean *
    gamma / sqrt(variance + epsilon)``), and whether the layer applies a ReLU after it.

    Raises:
        UsageProblem: a layer is neither a convolution with a bias nor a batch
            normalisation, or applies another activation inside itself.
    """
    import keras

    biases, relu = [], []
    for (layer, _), address in zip(graph.sites, graph.layers, strict=True):
        if isinstance(layer, keras.layers.BatchNormalization):
            biases.append(_normalisation_bias(layer))
            relu.append(False)
            continue
        if getattr(layer, "bias", None) is None or not hasattr(layer, "activation"):
            raise UsageProblem(
                f"fullgrad reads the bias of convolutions and batch normalisations, and "
                f"layer {address!r} is neither (or has no bias); it chooses its layers "
                "itself")
        activation = getattr(layer.activation, "__name__", "linear")
        if activation not in ("linear", "relu"):
            raise UsageProblem(
                f"fullgrad needs the gradient at a convolution's biased output, and "
                f"layer {address!r} applies a {activation!r} activation inside itself; "
                "use another method")
        biases.append(keras.ops.convert_to_numpy(layer.bias).astype("float32"))
        relu.append(activation == "relu")
    return biases, relu


def _scaled(term):
    """Each channel of each image min-max scaled to [0, 1]."""
    tf = tensorflow()
    low = tf.reduce_min(term, axis=[1, 2], keepdims=True)
    shifted = term - low
    return shifted / (EPS + tf.reduce_max(shifted, axis=[1, 2], keepdims=True))


def _normalisation_bias(layer):
    import keras
    import numpy as np

    mean = keras.ops.convert_to_numpy(layer.moving_mean).astype(np.float64)
    variance = keras.ops.convert_to_numpy(layer.moving_variance).astype(np.float64)
    gamma = keras.ops.convert_to_numpy(layer.gamma).astype(np.float64) if layer.scale else 1.0
    beta = keras.ops.convert_to_numpy(layer.beta).astype(np.float64) if layer.center else 0.0
    return (beta - mean * gamma / np.sqrt(variance + layer.epsilon)).astype(np.float32)
