"""EigenCAM — Muhammad & Yeasin, "Eigen-CAM: Class Activation Map using Principal
Components", IJCNN 2020.

The map is the projection of the (centred) activations on their first principal
component: no gradient, no class. SVD leaves the component's sign arbitrary; camcli picks
the sign whose projection correlates positively with the mean activation, so the map
shows where the layer is active rather than where it is not.
"""

from __future__ import annotations

from camcli.backend import tensorflow
from camcli.methods.base import BaseCAM


class EigenCAM(BaseCAM):
    name = "eigencam"
    paper = "Muhammad & Yeasin, Eigen-CAM, IJCNN 2020"
    cost = "1 forward + 1 SVD"
    use_when = "no gradients or class: what the layer responds to most"
    class_specific = False

    def raw_map(self, features, gradients, class_index):
        tf = tensorflow()
        shape = tf.shape(features)
        flat = tf.reshape(features, [shape[0], shape[1] * shape[2], shape[3]])  # (n, hw, c)
        centred = flat - tf.reduce_mean(flat, axis=1, keepdims=True)
        _, _, v = tf.linalg.svd(centred, full_matrices=False)  # v: (n, c, k)
        component = v[:, :, 0]
        projection = tf.einsum("npc,nc->np", centred, component)
        mean_activation = tf.reduce_mean(centred, axis=2)
        sign = tf.where(tf.reduce_sum(projection * mean_activation, axis=1) < 0, -1.0, 1.0)
        return tf.reshape(projection * sign[:, None], shape[:3])
