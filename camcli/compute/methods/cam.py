"""CAM — Zhou et al., "Learning Deep Features for Discriminative Localization", CVPR 2016.

For a head ``features -> global average pooling -> Dense``, the map of class k is the
Dense layer's weights for k applied at every position: ``sum_c W[c, k] * A[:, :, c]``.
CAM owns its rule: `classifier_kernel` reads that head from the layers after the target
(`camcli.compute.models.graph.ExplainGraph.head_layers`) and refuses any other.
"""

from __future__ import annotations

from typing import Any

from camcli.compute.backend import tensorflow
from camcli.compute.methods.base import BaseCAM
from camcli.errors import CamNotApplicable

#: Layers that change nothing at inference time (CAM's head may contain them).
INFERENCE_IDENTITY = ("Dropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D",
                      "GaussianDropout", "GaussianNoise", "AlphaDropout",
                      "ActivityRegularization", "Identity")


class CAM(BaseCAM):
    name = "cam"
    paper = "Zhou et al., Learning Deep Features for Discriminative Localization, CVPR 2016"
    cost = "1 forward"
    use_when = "GAP -> Dense models: the cheapest class-specific map"
    no_fusion = "CAM is defined at the layer before the global average pooling only"

    def __init__(self, graph, fuse: str = "mean", smooth: str | None = None):
        super().__init__(graph, fuse, smooth)
        #: the classifier's Dense kernel ``(c, num_classes)``
        self.kernel = classifier_kernel(graph)

    def weights(self, features, gradients, class_index):
        tf = tensorflow()
        kernel = tf.cast(tf.convert_to_tensor(self.kernel), tf.float32)  # (c, classes)
        return tf.transpose(tf.gather(kernel, class_index, axis=1))  # (n, c)


def classifier_kernel(graph) -> Any:
    """The Dense kernel of the head after ``graph``'s target layer: global average pooling,
    then Dense, with only inference-time identities (dropout...), a flatten after a pooling
    that keeps its dimensions, and the Dense's own activation around them.

    Raises:
        CamNotApplicable: the head is anything else (saying what stands in the way).
    """
    problem, dense = _head_problem(graph.head_layers)
    problem = problem or graph.head_problem
    if problem is None and dense is None:
        problem = "the model's output is not a Dense layer after the pooling"
    if problem is not None:
        raise CamNotApplicable(f"CAM needs a global-average-pooling -> Dense head after layer "
                               f"{graph.layer!r}, but {problem}; use gradcam instead")
    return dense.kernel


def _head_problem(layers: list) -> tuple[str | None, Any]:
    """What in ``layers`` (the head, in order) is not GAP -> Dense, or None; and the Dense
    layer found."""
    import keras

    pooled, dense = False, None
    for layer in layers:
        kind = type(layer).__name__
        if kind in INFERENCE_IDENTITY:
            continue
        if not pooled:
            if not isinstance(layer, keras.layers.GlobalAveragePooling2D):
                return f"the target layer feeds {layer.name} ({kind}), not global average " \
                       "pooling", None
            pooled = True
        elif dense is None:
            if isinstance(layer, keras.layers.Dense):
                dense = layer
            elif not isinstance(layer, (keras.layers.Flatten, keras.layers.Reshape)):
                return f"{layer.name} ({kind}) stands between the pooling and the " \
                       "classifier", None
        elif not isinstance(layer, (keras.layers.Activation, keras.layers.Softmax)):
            return f"{layer.name} ({kind}) follows the classifier's Dense layer", None
    return None, dense
