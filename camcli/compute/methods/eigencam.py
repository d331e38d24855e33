"""Methods that project onto a principal component instead of weighting channels.

- EigenCAM — Muhammad & Yeasin, "Eigen-CAM: Class Activation Map using Principal
  Components", IJCNN 2020: the activations' first principal component; no gradient, no
  class.
- Eigen-Grad-CAM (pytorch-grad-cam's): the first principal component of gradient x
  activation, so the class counts.
- KPCA-CAM — Karmani et al., "KPCA-CAM: Visual Explainability of Deep Computer Vision
  Models using Kernel PCA", 2024: kernel PCA (scikit-learn's ``KernelPCA``) of the
  activations.

SVD and kernel PCA leave the component's sign arbitrary; camcli picks the sign whose
projection correlates positively with the mean of the (centred) maps over channels
(`camcli.compute.methods.base.sign_towards`), so the map shows where the layer is active rather
than where it is not.
"""

from __future__ import annotations

import numpy as np

from camcli.compute.backend import tensorflow
from camcli.compute.methods.base import BaseCAM, first_component, sign_towards

#: Kernels ``--kernel`` takes (scikit-learn's KernelPCA kernels).
KERNELS = ("sigmoid", "rbf", "poly", "linear", "cosine")

_PROJECTED = "its map is a principal component already"


class EigenCAM(BaseCAM):
    name = "eigencam"
    paper = "Muhammad & Yeasin, Eigen-CAM, IJCNN 2020"
    cost = "1 forward + 1 SVD"
    use_when = "no gradients or class: what the layer responds to most"
    class_specific = False
    no_eigen = _PROJECTED

    def raw_map(self, features, gradients, class_index):
        return first_component(features)


class EigenGradCAM(BaseCAM):
    name = "eigengradcam"
    paper = "pytorch-grad-cam's Eigen-Grad-CAM (EigenCAM of gradient x activation)"
    cost = "1 forward + 1 backward + 1 SVD"
    use_when = "EigenCAM's clean maps, but of the explained class"
    needs_gradients = True
    no_eigen = _PROJECTED

    def raw_map(self, features, gradients, class_index):
        return first_component(gradients * features)


class KPCACAM(BaseCAM):
    name = "kpcacam"
    paper = "Karmani et al., KPCA-CAM, 2024"
    cost = "1 forward + kernel PCA of h*w positions"
    use_when = "EigenCAM with a non-linear (kernel) component; no gradients or class"
    class_specific = False
    no_eigen = _PROJECTED
    options = ("kernel",)

    def __init__(self, graph, fuse: str = "mean", smooth: str | None = None, *,
                 kernel: str = KERNELS[0]):
        """
        Args:
            kernel: scikit-learn KernelPCA's kernel (`KERNELS`), with its default gamma
                (1 / channels).
        """
        if kernel not in KERNELS:
            raise ValueError(f"kernel must be one of {KERNELS}, got {kernel!r}")
        super().__init__(graph, fuse, smooth)
        self.kernel = kernel

    def raw_map(self, features, gradients, class_index):
        tf = tensorflow()
        shape = tf.shape(features)
        flat = tf.reshape(features, [shape[0], shape[1] * shape[2], shape[3]])
        centred = flat - tf.reduce_mean(flat, axis=1, keepdims=True)
        projection = tf.numpy_function(self._kernel_pca, [centred], tf.float32, stateful=False)
        projection = tf.reshape(projection, [shape[0], shape[1] * shape[2]])
        return tf.reshape(projection * sign_towards(projection, centred), shape[:3])

    def _kernel_pca(self, centred: np.ndarray) -> np.ndarray:
        from sklearn.decomposition import KernelPCA

        out = np.zeros(centred.shape[:2], np.float32)
        for n, positions in enumerate(centred.astype(np.float64)):
            if not np.any(positions):
                continue  # nothing varies: no component, a blank map
            # random_state: ARPACK's start vector (over 200 positions), so a map repeats
            component = KernelPCA(n_components=1, kernel=self.kernel, random_state=0)
            out[n] = component.fit_transform(positions)[:, 0]
        return out
