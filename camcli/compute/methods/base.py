"""The shared machinery of every class-activation-map method.

A method turns a batch of preprocessed images into, per image: the class probabilities,
the explained class, and a low-resolution map. The base class runs the single forward pass
(under a gradient tape when the method needs gradients), picks the class, forms the
weighted sum of feature maps, applies ReLU and normalises each map to [0, 1]. A method
only supplies its weights: one per channel ``(n, c)`` or one per element ``(n, h, w, c)``.

With several target layers, the same pass gives every layer's map; each is normalised,
upsampled (bilinear) to the finest layer's grid, and the maps are fused by their mean or
maximum, then normalised again (as LayerCAM's paper and pytorch-grad-cam do).

Two smoothings apply to any method (``smooth``), as pytorch-grad-cam's ``aug_smooth``
and ``eigen_smooth``: ``aug`` averages the maps of six variants of each image (flipped
or not, times 0.9, 1 and 1.1), each brought back before the mean; ``eigen`` replaces the
weighted sum of the feature maps by the projection of the weighted feature maps on their
first principal component (`first_component`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from camcli.compute.backend import tensorflow
from camcli.compute.models.addresses import INPUT_SUFFIX
from camcli.compute.models.graph import ExplainGraph
from camcli.errors import LayerError, UsageProblem

log = logging.getLogger("camcli")


@dataclass
class Explanation:
    """Per-batch results (NumPy arrays, first axis = image).

    Attributes:
        probabilities: ``(n, classes)`` class probabilities (or raw outputs, see
            `ExplainGraph.output_kind`).
        class_index: ``(n,)`` the explained class of each image.
        raw_maps: ``(n, h, w)`` the weighted sums before ReLU and normalisation (None when
            only predicting).
        maps: ``(n, h, w)`` float32 maps in [0, 1]; an image with no positive evidence has
            an all-zero map.
    """

    probabilities: np.ndarray
    class_index: np.ndarray
    raw_maps: np.ndarray | None = None
    maps: np.ndarray | None = None


#: A requested class of -1 means "the top-1 prediction" (the default).
TOP1 = -1

#: How the maps of several layers become one.
FUSE_MODES = ("mean", "max")

#: The smoothings (``--smooth``): test-time augmentation, or the first principal component.
SMOOTHINGS = ("aug", "eigen")

#: ``aug``'s brightness multipliers; each is applied to the image and to its mirror image.
AUG_FACTORS = (0.9, 1.0, 1.1)


def rank_classes(probabilities: np.ndarray, k: int) -> np.ndarray:
    """The ``k`` most probable classes of each row, best first.

    The one rule for "the top class" everywhere (the explained class, a record's ``top``,
    --top-k-maps ranks): higher probability first, and on a tie the lower class index
    first. `forward` applies the same rule inside TensorFlow (``tf.math.top_k`` puts the
    lower index first on ties), on the very same probabilities.
    """
    order = np.argsort(-np.asarray(probabilities), axis=-1, kind="stable")
    return order[..., :k]


class BaseCAM:
    """Base of every method. A method is a subclass that sets the class variables below
    and overrides the one hook it needs; `__call__` (``smooth="aug"``), the forward pass,
    class choice, ReLU, normalisation and fusion stay here. The hooks, from the most
    common to the rarest:

    * `weights` — ``(n, c)`` channel or ``(n, h, w, c)`` element weights of the feature
      maps (Grad-CAM, Grad-CAM++, XGrad-CAM, HiResCAM, LayerCAM, CAM, RandomCAM);
    * `raw_map` — a map that is not a weighted sum (EigenCAM, KPCA-CAM, element-wise
      Grad-CAM);
    * `score` — another differentiated score than the class logit (Finer-CAM,
      ShapleyCAM);
    * `differentiate` — other gradients than d(score)/d(features) (ShapleyCAM);
    * `explain_step` — the whole traced step, for a map that is no function of one
      layer's features and gradients (FullGrad);
    * `compute` — methods that run passes of their own (Score-CAM, Ablation-CAM; with
      `compile_step` and `as_requested`);
    * `own_layers` (a class method) — the layers the method explains whatever is asked
      (FullGrad's bias layers, the attention methods' blocks); ``--layer`` is then
      refused, and `own_layers_are` says what they are.

    A method that reads something of the model (CAM its classifier, FullGrad its biases)
    does so in its own ``__init__``, after this one, and raises `UsageProblem` there when
    the model does not have it.

    Args:
        graph: the model split open at the target layer
            (`camcli.compute.models.graph.build`).
        fuse: how several layers' maps become one (`FUSE_MODES`).
        smooth: ``aug``, ``eigen`` or None (`SMOOTHINGS`).
    """

    name: ClassVar[str] = ""
    paper: ClassVar[str] = ""
    #: cost per image, for the manual and ``camcli methods``
    cost: ClassVar[str] = "1 forward"
    use_when: ClassVar[str] = ""
    needs_gradients: ClassVar[bool] = False
    #: False for methods whose map does not depend on the class (EigenCAM)
    class_specific: ClassVar[bool] = True
    #: Why the method cannot fuse several layers, or None when it can.
    no_fusion: ClassVar[str | None] = None
    #: The `camcli.options.ExplainRequest` fields this method's constructor takes, by the
    #: same names (keyword arguments); they are refused with any other method.
    options: ClassVar[tuple[str, ...]] = ()
    #: Whether the constructor takes a ``progress`` hook (slow methods show a second bar).
    shows_progress: ClassVar[bool] = False
    #: Why ``--smooth eigen`` does not apply, or None when it does.
    no_eigen: ClassVar[str | None] = None
    #: A baseline for the metrics, not an explanation (``camcli methods`` says so).
    baseline: ClassVar[bool] = False
    #: Whether the method reads attention probabilities (``...:attention`` targets)
    #: instead of feature maps or tokens.
    reads_attention: ClassVar[bool] = False
    #: With `own_layers`: what those layers are, in a few words (for messages and logs).
    own_layers_are: ClassVar[str] = ""
    #: With `own_layers`: whether ``--layer`` may name others instead (LeGrad's blocks);
    #: else it is refused.
    takes_layers: ClassVar[bool] = False
    #: Whether the constructor copies values out of the model's weights (FullGrad's
    #: biases): after the weights change (``camcli evaluate``'s randomisation) the method
    #: must be built again; the others read the model's variables as they are.
    copies_weights: ClassVar[bool] = False

    def __init__(self, graph: ExplainGraph, fuse: str = FUSE_MODES[0],
                 smooth: str | None = None):
        if fuse not in FUSE_MODES:
            raise ValueError(f"fuse must be one of {FUSE_MODES}, got {fuse!r}")
        if smooth not in (None, *SMOOTHINGS):
            raise ValueError(f"smooth must be one of {SMOOTHINGS}, got {smooth!r}")
        self.graph = graph
        self.fuse = fuse
        self.smooth = smooth
        if len(graph.layers) > 1 and self.no_fusion:
            raise UsageProblem(f"{self.name} cannot fuse several layers: {self.no_fusion}")
        if smooth == "eigen" and self.no_eigen:
            raise UsageProblem(f"{{smooth}} eigen does not apply to {self.name}: "
                               f"{self.no_eigen}", ("smooth",))
        if not self.reads_attention and any(side == "attention" for _, side in
                                            graph.sites or ()):
            raise UsageProblem(f"{self.name} explains feature maps and tokens; an "
                               "'...:attention' address is read by the attention methods "
                               "(rollout, gradrollout, legrad)")
        self._step = None
        self._warned: set[str] = set()

    @classmethod
    def own_layers(cls, model) -> list[str] | None:
        """The addresses this method explains on ``model`` whatever is asked (FullGrad's
        bias layers), or None (the default): the asked layer, else the model's."""
        return None

    def weights(self, features, gradients, class_index):
        """Return ``(n, c)`` channel weights or ``(n, h, w, c)`` element weights (tensors).

        Args:
            features: ``(n, h, w, c)`` target-layer activations.
            gradients: d(class score)/d(features), same shape; None unless
                `needs_gradients`.
            class_index: ``(n,)`` int32, the class explained for each image.
        """
        raise NotImplementedError

    def raw_map(self, features, gradients, class_index):
        """The map before ReLU and normalisation: the weighted sum of the feature maps."""
        return self.combine(features, self.weights(features, gradients, class_index))

    def combine(self, features, weights):
        """``(n, h, w)``: the feature maps ``(n, h, w, c)`` summed with their weights, one
        per channel ``(n, c)`` or per element; with ``smooth="eigen"``, the weighted maps'
        projection on their first principal component instead."""
        tf = tensorflow()
        if self.smooth == "eigen":
            weighted = features * (weights[:, None, None, :] if weights.shape.rank == 2
                                   else weights)
            return first_component(weighted)
        if weights.shape.rank == 2:
            return tf.einsum("nhwc,nc->nhw", features, weights)
        return tf.reduce_sum(features * weights, axis=-1)

    def score(self, logits, class_index):
        """``(n,)`` what is explained: the logit of each image's class (pre-softmax where
        the model has a softmax). Methods with another score override it."""
        return tensorflow().gather(logits, class_index, batch_dims=1)

    # -- shared work ------------------------------------------------------------------

    def differentiate(self, x, requested):
        """The forward pass and d(score)/d(features): ``(features, probabilities,
        class_index, gradients)``, one feature and gradient tensor per target layer (a
        gradient is None where Keras gives none)."""
        tf = tensorflow()
        with tf.GradientTape() as tape:
            features, probabilities, class_index, score = forward(self.graph, x, requested,
                                                                  self.score)
        # Images in a batch are independent at inference, so the gradient of the summed
        # scores holds each image's own d(score)/d(features).
        return features, probabilities, class_index, tape.gradient(score, features)

    def explain_step(self, x, requested):
        """The traced step (`compile_step`): ``(probabilities, class_index, raw map, map,
        zero)``, ``zero`` saying per layer and image whether the gradient was zero
        everywhere."""
        tf = tensorflow()
        if self.needs_gradients:
            features, probabilities, class_index, gradients = self.differentiate(x, requested)
            for layer, gradient in zip(self.graph.layers, gradients, strict=True):
                if gradient is None:
                    raise LayerError(
                        f"{self.name} needs the gradient of the class score at layer "
                        f"{layer!r}, and Keras gives none there (a preprocessing layer such "
                        "as Rescaling, or one whose output the classifier does not use); "
                        "choose a later layer ('camcli layers MODEL' lists them)")
            gradients = [tf.cast(self.graph.as_map(number, g), tf.float32)
                         for number, g in enumerate(gradients)]
            # Per layer and image: whether the gradient is zero everywhere (a blank map).
            zero = tf.stack([tf.reduce_all(tf.equal(g, 0.0), axis=[1, 2, 3])
                             for g in gradients])
        else:
            features, probabilities, class_index, _ = forward(self.graph, x, requested)
            gradients = [None] * len(features)
            zero = tf.zeros([len(features), tf.shape(x)[0]], tf.bool)
        # A token layer's output (and its gradient, above) as the map of its patches.
        features = [self.graph.as_map(number, f) for number, f in enumerate(features)]
        raws = [self.raw_map(tf.cast(f, tf.float32), g, class_index)
                for f, g in zip(features, gradients, strict=True)]
        raw = raws[0] if len(raws) == 1 else fuse([normalise(r) for r in raws], self.fuse)
        return probabilities, class_index, raw, normalise(raw), zero

    def __call__(self, batch: np.ndarray, class_index: int | np.ndarray = TOP1) -> Explanation:
        """Explain a preprocessed float32 batch ``(n, height, width, 3)``.

        Args:
            class_index: the class to explain, one for all images or one per image;
                `TOP1` (-1) explains each image's top-1 prediction.
        """
        if self.smooth != "aug":
            return self.compute(batch, class_index)
        # The plain images first: their classes are the ones every variant explains.
        plain = self.compute(batch, class_index)
        variants, undo = augmented(batch)
        others = self.compute(variants, np.tile(plain.class_index, len(undo)))
        maps = [plain.maps] + [back(m) for back, m in
                               zip(undo, np.split(others.maps, len(undo)), strict=True)]
        mean = np.mean(maps, axis=0, dtype=np.float64).astype(np.float32)
        peak = mean.max(axis=(1, 2), keepdims=True)
        return Explanation(plain.probabilities, plain.class_index, mean,
                           np.divide(mean, peak, out=np.zeros_like(mean), where=peak > 0))

    def compute(self, batch: np.ndarray, class_index: int | np.ndarray) -> Explanation:
        """One explanation of ``batch`` (no augmentation): the method's own work."""
        if self._step is None:
            self._step = compile_step(self.explain_step, batch)
        probabilities, chosen, raw, maps, zero = self._step(batch,
                                                            as_requested(class_index, batch))
        self._say_zero_gradients(zero.numpy())
        return Explanation(probabilities.numpy(), chosen.numpy(), raw.numpy(), maps.numpy())

    def _say_zero_gradients(self, zero: np.ndarray) -> None:
        """Warn, once a layer, when a layer's gradients are all zero for some images: their
        maps would be blank (a token-pooled transformer's last block's output)."""
        for number, layer in enumerate(self.graph.layers):
            count = int(zero[number].sum())
            if not count or layer in self._warned:
                continue
            self._warned.add(layer)
            grid = self.graph.grids[number] if self.graph.grids else None
            if grid is not None and not layer.endswith(INPUT_SUFFIX):
                advice = (f"the head reads only the prefix tokens there; explain the block's "
                          f"input instead (--layer {layer}{INPUT_SUFFIX}, 'camcli layers "
                          "MODEL' lists the blocks)")
            else:
                advice = "choose an earlier layer ('camcli layers MODEL' lists them)"
            log.warning("%s: the gradients at layer %s are all zero for %d of %d images in a "
                        "batch, so their maps are blank; %s", self.name, layer, count,
                        zero.shape[1], advice)


def forward(graph: ExplainGraph, x, requested, score=None):
    """The one forward pass: features (a list, one per target layer), probabilities,
    explained class and its score.

    The score is ``score(logits, class_index)``; by default the logit of the explained
    class (pre-softmax where the model has one).
    """
    features, logits = graph.run(x)
    logits, probabilities, class_index = classified(graph, logits, requested)
    if score is None:
        return features, probabilities, class_index, tensorflow().gather(
            logits, class_index, batch_dims=1)
    return features, probabilities, class_index, score(logits, class_index)


def classified(graph: ExplainGraph, logits, requested):
    """``(logits, probabilities, class_index)``: the logits as float32, the
    probabilities they give, and each image's explained class (``requested``, or the
    top-1 where it is negative)."""
    tf = tensorflow()
    logits = tf.cast(logits, tf.float32)
    if graph.output_kind == "softmax":
        probabilities = tf.nn.softmax(logits, axis=-1)
    elif graph.output_kind == "sigmoid":
        probabilities = tf.sigmoid(logits)
    else:
        probabilities = logits
    # Not tf.argmax: it does not say which index wins a tie; top_k takes the lower one.
    top1 = tf.math.top_k(probabilities, k=1).indices[:, 0]
    return logits, probabilities, tf.where(requested >= 0, requested, top1)


def compile_step(fn, batch: np.ndarray):
    """``fn(images, requested)`` as one `tf.function` traced once for every batch size
    (the last batch of a run is usually smaller)."""
    tf = tensorflow()
    image_spec = tf.TensorSpec((None,) + tuple(batch.shape[1:]), tf.float32)
    return tf.function(fn, input_signature=[image_spec, tf.TensorSpec((None,), tf.int32)],
                       autograph=False)


def as_requested(class_index: int | np.ndarray, batch: np.ndarray):
    """The requested classes as the int32 tensor `compile_step` functions take, one per
    image of ``batch``."""
    requested = np.broadcast_to(np.asarray(class_index, np.int32), (len(batch),))
    return tensorflow().constant(requested)


def fuse(maps: list, mode: str):
    """Several layers' ``(n, h, w)`` maps, upsampled (bilinear) to the finest one's grid,
    then averaged (``mean``) or maxed (``max``)."""
    tf = tensorflow()
    sizes = [(m.shape[1] or 0) * (m.shape[2] or 0) for m in maps]
    grid = tf.shape(maps[sizes.index(max(sizes))])[1:3]
    upsampled = tf.stack([tf.image.resize(m[..., None], grid, method="bilinear")[..., 0]
                          for m in maps])
    return tf.reduce_mean(upsampled, axis=0) if mode == "mean" else \
        tf.reduce_max(upsampled, axis=0)


def first_component(weighted):
    """``(n, h, w)``: each image's ``(h, w, c)`` maps, centred over positions, projected on
    their first principal component (SVD). SVD leaves its sign arbitrary; camcli takes
    the sign whose projection correlates positively with the centred maps' mean over
    channels, so the map shows where the maps are high rather than low."""
    tf = tensorflow()
    shape = tf.shape(weighted)
    flat = tf.reshape(weighted, [shape[0], shape[1] * shape[2], shape[3]])  # (n, hw, c)
    centred = flat - tf.reduce_mean(flat, axis=1, keepdims=True)
    _, _, v = tf.linalg.svd(centred, full_matrices=False)  # v: (n, c, k)
    projection = tf.einsum("npc,nc->np", centred, v[:, :, 0])
    return tf.reshape(projection * sign_towards(projection, centred), shape[:3])


def sign_towards(projection, centred):
    """``(n, 1)``: +1 or -1, whichever makes ``projection`` (n, p) correlate positively with
    the mean over channels of ``centred`` (n, p, c)."""
    tf = tensorflow()
    agreement = tf.reduce_sum(projection * tf.reduce_mean(centred, axis=2), axis=1)
    return tf.where(agreement < 0, -1.0, 1.0)[:, None]


def augmented(batch: np.ndarray):
    """``--smooth aug``'s other five variants of ``batch`` (stacked variant after variant)
    and, per variant, the function that brings its maps back onto the plain image."""
    flipped = batch[:, :, ::-1]
    variants, undo = [], []
    for mirror in (False, True):
        for factor in AUG_FACTORS:
            if not mirror and factor == 1.0:
                continue  # the plain image, explained first
            variants.append((flipped if mirror else batch) * np.float32(factor))
            undo.append((lambda m: m[:, :, ::-1]) if mirror else (lambda m: m))
    return np.concatenate(variants).astype(np.float32), undo


def highest_variance(maps, kept: int):
    """The indices of the ``kept`` channels of one image's ``(h, w, c)`` maps with the
    highest spatial variance (Faster Score-CAM's choice), highest first."""
    tf = tensorflow()
    return tf.math.top_k(tf.math.reduce_variance(maps, axis=[0, 1]), kept).indices


def normalise(raw):
    """ReLU, then divide each map by its maximum; a map with no positive value stays zero."""
    tf = tensorflow()
    positive = tf.nn.relu(raw)
    peak = tf.reduce_max(positive, axis=[1, 2], keepdims=True)
    return tf.math.divide_no_nan(positive, peak)


class Predictor:
    """Probabilities and top-1 only (``camcli predict``): the same forward pass, no map."""

    #: no method, so no name and nothing fused (what `BaseCAM` has)
    name: str | None = None
    fuse: str | None = None
    class_specific = True

    def __init__(self, graph: ExplainGraph):
        self.graph = graph
        self._step = None

    def _predict(self, x, requested):
        _, probabilities, class_index, _ = forward(self.graph, x, requested)
        return probabilities, class_index

    def __call__(self, batch: np.ndarray, class_index: int | np.ndarray = TOP1) -> Explanation:
        if self._step is None:
            self._step = compile_step(self._predict, batch)
        probabilities, chosen = self._step(batch, as_requested(class_index, batch))
        return Explanation(probabilities.numpy(), chosen.numpy())
