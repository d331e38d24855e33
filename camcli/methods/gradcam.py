"""Grad-CAM — Selvaraju et al., "Grad-CAM: Visual Explanations from Deep Networks via
Gradient-based Localization", ICCV 2017.

Channel weight = spatial mean of d(class score)/d(feature map); the score is the
pre-softmax logit when the model exposes it.
"""

from __future__ import annotations

from camcli.backend import tensorflow
from camcli.methods.base import BaseCAM


class GradCAM(BaseCAM):
    name = "gradcam"
    paper = "Selvaraju et al. 2017, Grad-CAM"
    needs_gradients = True

    def weights(self, features, gradients, class_index):
        return tensorflow().reduce_mean(gradients, axis=[1, 2])
