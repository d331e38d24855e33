"""Guided Backpropagation and Guided Grad-CAM: pixel-level maps.

* **Guided Backpropagation** (Springenberg et al., "Striving for Simplicity: The All
  Convolutional Net", ICLR 2015 workshop): the gradient of the class score to the model's
  input, with every ReLU's backward pass also zeroing the negative gradients
  (`camcli.compute.models.capture.guided_relu`; a ReLU6 lets through where ``0 < x <
  6``, as its own gradient does). The map is the sum over the colour channels of the
  gradient's absolute value, at the input's resolution.
* **Guided Grad-CAM** (Selvaraju et al., Grad-CAM, ICCV 2017): that map times the Grad-CAM
  map of the target layer upsampled (bilinear) to the input, as in the Grad-CAM paper
  and pytorch-grad-cam's ``cam_mask * gb``.

Both maps are pixel-level, a few pixels far above the rest: each is divided by its 99th
percentile and capped at 1 (`capped`; SmoothGrad's and Captum's way of showing them), so an
overlay shows the edges and not three hot pixels. ``raw_maps`` keep the values.

Both are the known failures of Adebayo et al.'s sanity checks (2018): their maps barely
change when the model's weights are randomised, because the rectifiers' masks, not the
weights, shape them. ``camcli evaluate`` checks it on the user's own model (on
EfficientNet-Lite0, Guided Backpropagation fails and Guided Grad-CAM, whose Grad-CAM
factor changes, passes by its Spearman).
"""

from __future__ import annotations

import numpy as np

from camcli.compute.backend import tensorflow
from camcli.compute.methods.base import (
    BaseCAM,
    Explanation,
    as_requested,
    compile_step,
    forward,
    normalise,
)
from camcli.compute.methods.gradient import GradCAM
from camcli.compute.models import capture
from camcli.compute.models.addresses import INPUT_SUFFIX, graph_layers
from camcli.errors import UsageProblem

#: A pixel-level map is divided by this percentile of its values, then capped at 1.
PERCENTILE = 99.0


def capped(raw: np.ndarray) -> np.ndarray:
    """``(n, H, W)`` non-negative maps divided by their `PERCENTILE`-th percentile and
    capped at 1 (a map whose percentile is 0 divided by its maximum; an all-zero map stays
    zero)."""
    raw = np.maximum(np.asarray(raw, np.float32), 0.0)
    scale = np.percentile(raw, PERCENTILE, axis=(1, 2), keepdims=True)
    scale = np.where(scale > 0, scale, raw.max(axis=(1, 2), keepdims=True))
    return np.clip(np.divide(raw, scale, out=np.zeros_like(raw), where=scale > 0), 0.0,
                   1.0).astype(np.float32)


def _rectifiers(model, name: str) -> list:
    found = capture.rectifiers(model)
    if not found:
        raise UsageProblem(
            f"{name} guides the gradient through the model's ReLUs, and this model has "
            "none (a transformer's GELUs, for one): its map would be the plain gradient; "
            "use another method")
    return found


class GuidedBackprop(BaseCAM):
    name = "guidedbackprop"
    paper = "Springenberg et al., Striving for Simplicity (Guided Backpropagation), 2015"
    cost = "1 forward + 1 backward (to the input)"
    use_when = ("pixel-level edges for a picture; fails the sanity check (Adebayo et al. "
                "2018): it shows the image more than the model")
    needs_gradients = True
    no_eigen = "its map is the gradient to the input, not weighted feature maps"
    own_layers_are = "the gradient to the model's input"

    def __init__(self, graph, fuse: str = "mean", smooth: str | None = None):
        super().__init__(graph, fuse, smooth)
        self._rectifiers = _rectifiers(graph.model, self.name)

    @classmethod
    def own_layers(cls, model) -> list[str]:
        """The model's input, as its first layer's input (``rescaling:input``): the map
        is the gradient there.

        Raises:
            UsageProblem: the model has no ReLU, or its first layer takes no image.
        """
        _rectifiers(model, cls.name)
        first = next(iter(graph_layers(model)), None)
        if first is None or len(model.inputs[0].shape) != 4:
            raise UsageProblem(f"{cls.name} explains an image model's input, and model "
                               f"{model.name!r} takes no image")
        return [first[0] + INPUT_SUFFIX]

    def explain_step(self, x, requested):
        tf = tensorflow()
        with tf.GradientTape() as tape:
            tape.watch(x)
            _, probabilities, class_index, score = forward(self.graph, x, requested)
        raw = tf.reduce_sum(tf.abs(tf.cast(tape.gradient(score, x), tf.float32)), axis=-1)
        zero = tf.reshape(tf.reduce_all(tf.equal(raw, 0.0), axis=[1, 2]), [1, -1])
        return probabilities, class_index, raw, normalise(raw), zero

    def compute(self, batch: np.ndarray, class_index) -> Explanation:
        # The guided rectifiers are in place while the step is traced (its first call).
        with capture.guided(self._rectifiers):
            found = super().compute(batch, class_index)
        return Explanation(found.probabilities, found.class_index, found.raw_maps,
                           capped(found.raw_maps))


class GuidedGradCAM(GradCAM):
    name = "guided-gradcam"
    paper = "Selvaraju et al., Grad-CAM, ICCV 2017 (Guided Grad-CAM)"
    cost = "2 forward + 2 backward"
    use_when = ("Grad-CAM's region at the input's resolution; Adebayo et al. 2018 saw it "
                "fail the sanity check on Inception v3 (camcli evaluate tells on your model)")
    no_eigen = "it multiplies Grad-CAM's map by the gradient to the input"
    no_fusion = "its Grad-CAM map is one layer's"

    def __init__(self, graph, fuse: str = "mean", smooth: str | None = None):
        super().__init__(graph, fuse, smooth)
        self._rectifiers = _rectifiers(graph.model, self.name)
        self._guided = None

    def _guided_step(self, x, requested):
        """The gradient to the input through the guided rectifiers: ``(n, H, W)`` summed
        absolute values."""
        tf = tensorflow()
        with tf.GradientTape() as tape:
            tape.watch(x)
            _, _, _, score = forward(self.graph, x, requested)
        return tf.reduce_sum(tf.abs(tf.cast(tape.gradient(score, x), tf.float32)), axis=-1)

    def compute(self, batch: np.ndarray, class_index) -> Explanation:
        cam = super().compute(batch, class_index)
        if self._guided is None:
            self._guided = compile_step(self._guided_step, batch)
        with capture.guided(self._rectifiers):
            pixels = self._guided(batch, as_requested(cam.class_index, batch)).numpy()
        tf = tensorflow()
        upsampled = tf.image.resize(cam.maps[..., None], pixels.shape[1:3],
                                    method="bilinear")[..., 0]
        raw = (upsampled * pixels).numpy()
        return Explanation(cam.probabilities, cam.class_index, raw, capped(raw))
