"""CAM — Zhou et al., "Learning Deep Features for Discriminative Localization", CVPR 2016.

For a head ``features -> global average pooling -> Dense``, the map of class k is the
Dense layer's weights for k applied at every position: ``sum_c W[c, k] * A[:, :, c]``.
"""

from __future__ import annotations

from camcli.backend import tensorflow
from camcli.errors import CamNotApplicable
from camcli.methods.base import BaseCAM


class CAM(BaseCAM):
    name = "cam"
    paper = "Zhou et al., Learning Deep Features for Discriminative Localization, CVPR 2016"
    cost = "1 forward"
    use_when = "GAP -> Dense models: the cheapest class-specific map"
    no_fusion = "CAM is defined at the layer before the global average pooling only"

    def check(self) -> None:
        if self.graph.cam_kernel is None:
            raise CamNotApplicable(
                f"CAM needs a global-average-pooling -> Dense head after layer "
                f"{self.graph.layer!r}, but {self.graph.cam_problem}; use gradcam instead"
            )

    def weights(self, features, gradients, class_index):
        tf = tensorflow()
        kernel = tf.cast(tf.convert_to_tensor(self.graph.cam_kernel), tf.float32)  # (c, classes)
        return tf.transpose(tf.gather(kernel, class_index, axis=1))  # (n, c)
