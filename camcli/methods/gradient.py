"""Gradient-based methods. ``gradients`` is d(score)/d(features), the score being the
explained class's pre-softmax logit (see `camcli.methods.base.forward`)."""

from __future__ import annotations

from camcli.backend import tensorflow
from camcli.methods.base import BaseCAM

#: Keeps divisions finite where a channel is all zero (the value pytorch-grad-cam uses).
EPS = 1e-7


class GradCAM(BaseCAM):
    """Selvaraju et al. 2017: channel weight = spatial mean of the gradient."""

    name = "gradcam"
    paper = "Selvaraju et al., Grad-CAM, ICCV 2017"
    cost = "1 forward + 1 backward"
    use_when = "the default: any model, any layer, class-specific"
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
