"""Ablation-CAM — Desai & Ramaswamy, "Ablation-CAM: Visual Explanations for Deep
Convolutional Network via Gradient-free Localization", WACV 2020.

Each channel's weight is the relative drop of the class's score when that channel is
zeroed: ``(y - y_k) / y``, ``y`` the score (the class's logit) and ``y_k`` the score with
channel ``k`` of the target layer set to zero. The ablated copies go through the model
from the target layer up only (`camcli.compute.models.graph.ExplainGraph.logits_from`), ``batch``
at a time. ``max_maps`` ablates only the K channels of highest variance (as Faster
Score-CAM chooses its maps); the others weigh 0. The paper zeroes a channel, and so does
camcli; pytorch-grad-cam sets it to its minimum minus 1e7 where the layer has negative
values.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from camcli.compute.backend import tensorflow
from camcli.compute.methods.base import (
    BaseCAM,
    Explanation,
    as_requested,
    compile_step,
    forward,
    highest_variance,
    normalise,
)

#: Ablated copies per pass through the model's upper part.
ABLATION_BATCH = 64


class AblationCAM(BaseCAM):
    name = "ablationcam"
    paper = "Desai & Ramaswamy, Ablation-CAM, WACV 2020"
    cost = "1 forward + C passes of the layers above (C channels, or --max-maps)"
    use_when = "no gradients: each channel weighed by what removing it costs; slow"
    no_fusion = "each layer would need its own ablated passes (C a layer)"
    options = ("max_maps",)
    shows_progress = True

    def __init__(self, graph, fuse: str = "mean", smooth: str | None = None, *,
                 max_maps: int | None = None,
                 progress: Callable[[int], object] | None = None):
        """
        Args:
            max_maps: ablate only the K channels of highest variance (None: all).
            progress: ``progress(total)`` returns a tqdm-like object (``update``,
                ``close``) shown while the ablated passes run.
        """
        if max_maps is not None and max_maps < 1:
            raise ValueError(f"max_maps must be >= 1, got {max_maps}")
        super().__init__(graph, fuse, smooth)
        self.max_maps, self.progress = max_maps, progress
        self._scores = None

    def _first_pass(self, x, requested):
        (features,), probabilities, class_index, score = forward(self.graph, x, requested)
        return features, probabilities, class_index, score

    def _ablated_scores(self, image, features, channels, class_index):
        """The class's score with each of ``channels`` zeroed in turn (one row each)."""
        tf = tensorflow()
        depth = tf.shape(features)[-1]
        keep = 1.0 - tf.one_hot(channels, depth, dtype=features.dtype)  # (k, c)
        keep = tf.reshape(keep, tf.concat([[tf.shape(channels)[0]],
                                           tf.ones([tf.rank(features) - 2], tf.int32),
                                           [depth]], axis=0))
        ablated = features * keep  # features: (1, ..., c), broadcast to (k, ..., c)
        images = tf.repeat(image, tf.shape(channels)[0], axis=0)
        logits = tf.cast(self.graph.logits_from(images, ablated), tf.float32)
        return logits[:, class_index]

    def compute(self, batch: np.ndarray, class_index) -> Explanation:
        tf = tensorflow()
        if self._step is None:
            self._step = compile_step(self._first_pass, batch)
            self._scores = tf.function(self._ablated_scores, reduce_retracing=True,
                                       autograph=False)
        features, probabilities, chosen, score = self._step(batch,
                                                            as_requested(class_index, batch))
        maps = tf.cast(self.graph.as_map(0, features), tf.float32)
        channels = int(maps.shape[-1])
        kept = channels if self.max_maps is None else min(self.max_maps, channels)
        bar = self.progress(len(batch) * kept) if self.progress else None
        weights = np.zeros((len(batch), channels), np.float32)
        try:
            for n in range(len(batch)):
                if kept < channels:
                    ablate = highest_variance(maps[n], kept).numpy()
                else:
                    ablate = np.arange(channels)
                y = float(score[n])
                for start in range(0, kept, ABLATION_BATCH):
                    chunk = ablate[start:start + ABLATION_BATCH].astype(np.int32)
                    dropped = self._scores(batch[n:n + 1], features[n:n + 1],
                                           tf.constant(chunk), chosen[n]).numpy()
                    weights[n, chunk] = (y - dropped) / y if y != 0 else 0.0
                    if bar is not None:
                        bar.update(len(chunk))
        finally:
            if bar is not None:
                bar.close()
        raw = self.combine(maps, tf.constant(weights))
        return Explanation(probabilities.numpy(), chosen.numpy(), raw.numpy(),
                           normalise(raw).numpy())
