"""Score-CAM — Wang et al., "Score-CAM: Score-Weighted Visual Explanations for
Convolutional Neural Networks", CVPR workshops 2020.

Each activation map, upsampled to the input size and min-max normalised to [0, 1], masks
the (preprocessed) input; the explained class's probability on the masked input is that
channel's weight. ``max_maps`` keeps only the K maps of highest variance (the Faster
Score-CAM trick); masked inputs go through the model ``batch_size`` at a time.
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
from camcli.options import DEFAULT_SCORECAM_BATCH


class ScoreCAM(BaseCAM):
    name = "scorecam"
    paper = "Wang et al., Score-CAM, CVPR-W 2020"
    cost = "1 + C forwards (C channels, or --max-maps)"
    use_when = "no gradients needed; robust to saturated gradients; slow"
    no_fusion = "each layer would need its own masked passes (C forwards a layer)"
    options = ("max_maps", "scorecam_batch")
    shows_progress = True

    def __init__(self, graph, fuse: str = "mean", smooth: str | None = None, *,
                 max_maps: int | None = None,
                 scorecam_batch: int = DEFAULT_SCORECAM_BATCH,
                 progress: Callable[[int], object] | None = None):
        """
        Args:
            max_maps: keep the K channels of highest variance (None: all channels).
            scorecam_batch: masked inputs per forward pass.
            progress: ``progress(total)`` returns a tqdm-like object (``update``, ``close``)
                shown while the masked passes run.
        """
        if scorecam_batch < 1:
            raise ValueError(f"scorecam_batch must be >= 1, got {scorecam_batch}")
        if max_maps is not None and max_maps < 1:
            raise ValueError(f"max_maps must be >= 1, got {max_maps}")
        super().__init__(graph, fuse, smooth)
        self.batch_size, self.max_maps, self.progress = scorecam_batch, max_maps, progress
        self._score_step = None

    def _first_pass(self, x, requested):
        (features,), probabilities, class_index, _ = forward(self.graph, x, requested)
        return (tensorflow().cast(self.graph.as_map(0, features), "float32"), probabilities,
                class_index)

    def _masked_scores(self, x, requested):
        _, probabilities, class_index, _ = forward(self.graph, x, requested)
        return tensorflow().gather(probabilities, class_index, batch_dims=1)

    def compute(self, batch: np.ndarray, class_index) -> Explanation:
        tf = tensorflow()
        if self._step is None:
            self._step = compile_step(self._first_pass, batch)
            self._score_step = compile_step(self._masked_scores, batch)
        features, probabilities, chosen = self._step(batch, as_requested(class_index, batch))
        channels = int(features.shape[-1])
        kept = channels if self.max_maps is None else min(self.max_maps, channels)
        bar = self.progress(len(batch) * kept) if self.progress else None
        try:
            raw = tf.stack([self._one(batch[i], features[i], int(chosen[i]), kept, bar)
                            for i in range(len(batch))])
        finally:
            if bar is not None:
                bar.close()
        return Explanation(probabilities.numpy(), chosen.numpy(), raw.numpy(),
                           normalise(raw).numpy())

    def _one(self, image, features, class_index: int, kept: int, bar):
        tf = tensorflow()
        if kept < features.shape[-1]:
            selected = tf.gather(features, highest_variance(features, kept), axis=-1)
        else:
            selected = features
        size = tuple(image.shape[:2])
        upsampled = tf.image.resize(selected[None], size, method="bilinear")[0]  # (H, W, K)
        low = tf.reduce_min(upsampled, axis=[0, 1])
        high = tf.reduce_max(upsampled, axis=[0, 1])
        masks = tf.transpose(tf.math.divide_no_nan(upsampled - low, high - low), [2, 0, 1])
        scores = []
        for start in range(0, kept, self.batch_size):
            chunk = masks[start:start + self.batch_size]
            masked = image[None] * chunk[..., None]  # (k, H, W, 3)
            scores.append(self._score_step(masked, tf.fill([tf.shape(chunk)[0]], class_index)))
            if bar is not None:
                bar.update(int(chunk.shape[0]))
        return self.combine(selected[None], tf.concat(scores, axis=0)[None])[0]
