"""Methods that read a vision transformer's attention instead of a layer's features.

Every block's attention probabilities ``A_l`` (batch, heads, tokens, tokens) are captured
during the one forward pass (`camcli.compute.models.capture.attending`: keras-hub's ViT,
DeiT and DINOv2 blocks attend with ``keras.layers.MultiHeadAttention``), with their
gradients from the same tape when a method needs them. A map is then one row of a
token-to-token relevance matrix ``R``: the read-out's (the class token's, or the mean of
the patch rows for a mean-pooled head), over the patch columns, laid out on the patch grid
(prefix tokens, DeiT's distillation token and DINOv2's registers, take part in every
product and are left out only there).

* `Rollout` (Abnar & Zuidema 2020): ``Â_l = ½ fuse_heads(A_l) + ½ I``, rows normalised
  to sum 1; ``R = Â_L ⋯ Â_1``. ``head_fusion`` is mean, max or min over the heads, and
  ``discard_ratio`` drops the lowest fraction of each fused matrix's entries (never the
  read-out token's own), as vit-explain does. The map does not depend on the class.
* `GradRollout` (Chefer, Gur & Wolf 2021, "Generic Attention-model Explainability"):
  ``R = I``; for each block in order, ``Ā_l = mean_heads((∇A_l ⊙ A_l)⁺)`` and ``R ← R +
  Ā_l R``; ∇ of the class's pre-softmax logit, as for every camcli method.
* `LeGrad` (Bousselham et al. 2024, "LeGrad: An Explainability Method for Vision
  Transformers via Feature Formation Sensitivity"): per explained block ``l``, the
  model's own head (`camcli.compute.models.graph.TokenHead`: final norm, pooling,
  classifier) applied to block ``l``'s output tokens gives a score ``s_l``; the block's
  map is ``ReLU(∂s_l/∂A_l)`` averaged over the heads, read out like the others; the maps
  are summed over the blocks and min-max normalised.

They pick their own targets (`AttentionMethod.own_layers`: every block's attention; LeGrad
also takes ``--layer``'s ``...:attention`` addresses) and
refuse a model whose blocks attend otherwise (Swin's windowed attention, DINOv3's fused
attention) or that has no transformer blocks.
"""

from __future__ import annotations

from typing import ClassVar

from camcli.compute.backend import tensorflow
from camcli.compute.methods.base import BaseCAM, classified, forward, normalise
from camcli.compute.models.addresses import block_attention
from camcli.errors import UsageProblem
from camcli.options import DISCARD_RATIO, HEAD_FUSION

#: How rollout fuses a block's heads (``--head-fusion``).
HEAD_FUSIONS = ("mean", "max", "min")

#: Methods that explain a token layer, for the refusal on a model whose attention these
#: methods cannot read.
TOKEN_METHODS = "gradcam, gradcam++, xgradcam, hirescam, layercam or eigencam"


class AttentionMethod(BaseCAM):
    """The shared part of the attention methods: the targets (every block's attention),
    the pass that captures them, and the read-out."""

    reads_attention: ClassVar[bool] = True
    no_eigen: ClassVar[str | None] = "it combines attention matrices, not weighted " \
                                     "feature maps"
    own_layers_are: ClassVar[str] = "the attention of every transformer block"

    def __init__(self, graph, fuse: str = "mean", smooth: str | None = None):
        super().__init__(graph, fuse, smooth)
        if any(side != "attention" for _, side in graph.sites):
            raise UsageProblem(f"{self.name} reads attention probabilities: its targets are "
                               "'...:attention' addresses ('camcli layers MODEL')")
        self.fuse = None  # the blocks are combined by the method's own rule, not fused
        self.grid = graph.grids[0]
        self.readout = graph.readout

    @classmethod
    def own_layers(cls, model) -> list[str]:
        """The attention of each of ``model``'s transformer blocks, in order.

        Raises:
            UsageProblem: the model has no transformer blocks, or its blocks do not
                attend with ``keras.layers.MultiHeadAttention``.
        """
        found = block_attention(model)
        if found is None:
            raise UsageProblem(
                f"{cls.name} needs attention: it reads the attention of a transformer's "
                f"blocks, and model {model.name!r} has no transformer blocks; use gradcam "
                "or another CAM method ('camcli methods')")
        missing = [kind for kind, address in zip(found.attention, found.addresses,
                                                 strict=True) if address is None]
        if missing:
            how = f"with {missing[0]}" if missing[0] else "with a layer of their own"
            raise UsageProblem(
                f"{cls.name} reads the attention probabilities of "
                f"keras.layers.MultiHeadAttention, and the blocks of {found.family} attend "
                f"{how}; on this model use a method that explains a token layer: "
                f"{TOKEN_METHODS} ('camcli layers MODEL' lists the layers)")
        return found.addresses

    def explain_step(self, x, requested):
        tf = tensorflow()
        if self.needs_gradients:
            with tf.GradientTape() as tape:
                attentions, probabilities, class_index, score = forward(
                    self.graph, x, requested, self.score)
            gradients = tape.gradient(score, attentions)
        else:
            attentions, probabilities, class_index, _ = forward(self.graph, x, requested)
            gradients = [None] * len(attentions)
        rows = self.relevance([tf.cast(a, tf.float32) for a in attentions],
                              [None if g is None else tf.cast(g, tf.float32)
                               for g in gradients],
                              readout_rows(self.readout, self.grid, attentions[0]))
        raw = patch_map(rows, self.grid)
        zero = tf.zeros([len(self.graph.layers), tf.shape(x)[0]], tf.bool)
        return probabilities, class_index, raw, normalise(raw), zero

    def relevance(self, attentions: list, gradients: list, rows):
        """``rows`` ``(n, 1, tokens)`` (the read-out, `readout_rows`) times the method's
        token-to-token relevance: ``(n, 1, tokens)``."""
        raise NotImplementedError


class Rollout(AttentionMethod):
    name = "rollout"
    paper = "Abnar & Zuidema, Quantifying Attention Flow in Transformers, ACL 2020"
    cost = "1 forward"
    use_when = ("vision transformers (ViT, DeiT, DINOv2): where attention flows; not "
                "class-specific (one map whatever the class)")
    class_specific = False
    options = ("head_fusion", "discard_ratio")

    def __init__(self, graph, fuse: str = "mean", smooth: str | None = None,
                 head_fusion: str = HEAD_FUSION, discard_ratio: float = DISCARD_RATIO):
        if head_fusion not in HEAD_FUSIONS:
            raise ValueError(f"head_fusion must be one of {HEAD_FUSIONS}, got "
                             f"{head_fusion!r}")
        if not 0.0 <= discard_ratio < 1.0:
            raise ValueError(f"discard_ratio must be in [0, 1), got {discard_ratio!r}")
        super().__init__(graph, fuse, smooth)
        self.head_fusion, self.discard_ratio = head_fusion, discard_ratio

    def relevance(self, attentions, gradients, rows):
        return rollout(attentions, rows, self.head_fusion, self.discard_ratio,
                       self.readout == "token")


class GradRollout(AttentionMethod):
    name = "gradrollout"
    paper = ("Chefer, Gur & Wolf, Generic Attention-model Explainability for Interpreting "
             "Bi-Modal and Encoder-Decoder Transformers, ICCV 2021")
    cost = "1 forward + 1 backward"
    use_when = "vision transformers (ViT, DeiT, DINOv2): class-specific attention relevance"
    needs_gradients = True

    def relevance(self, attentions, gradients, rows):
        return gradient_rollout(attentions, gradients, rows)


class LeGrad(AttentionMethod):
    name = "legrad"
    paper = ("Bousselham, Boggust, Chaybouti, Strobelt & Kuehne, LeGrad: An Explainability "
             "Method for Vision Transformers via Feature Formation Sensitivity, 2024")
    cost = "1 forward + 1 backward per block"
    use_when = ("vision transformers (ViT, DeiT, DINOv2): class-specific, every block's "
                "attention judged by the model's own head; --layer picks blocks")
    needs_gradients = True
    takes_layers = True
    own_layers_are = "the attention of every transformer block (or those --layer names)"

    def __init__(self, graph, fuse: str = "mean", smooth: str | None = None):
        super().__init__(graph, fuse, smooth)
        head = graph.token_head
        problem = graph.token_head_problem if head is None else head.check(graph.model)
        if problem is not None:
            raise UsageProblem(f"legrad applies the model's head to each block's tokens, "
                               f"and {problem}; use rollout or gradrollout")

    def explain_step(self, x, requested):
        tf = tensorflow()
        with tf.GradientTape(persistent=True) as tape:
            attentions, blocks, logits = self.graph.run_blocks(x)
            _, probabilities, class_index = classified(self.graph, logits, requested)
            scores = [self.score(tf.cast(self.graph.token_head(tokens), tf.float32),
                                 class_index) for tokens in blocks]
        # One gradient per block: s_l's with respect to block l's attention only.
        gradients = [tape.gradient(score, attention)
                     for score, attention in zip(scores, attentions, strict=True)]
        del tape
        raw = legrad([tf.zeros_like(a, tf.float32) if g is None else tf.cast(g, tf.float32)
                      for a, g in zip(attentions, gradients, strict=True)],
                     readout_rows(self.readout, self.grid, attentions[0]), self.grid)
        zero = tf.zeros([len(self.graph.layers), tf.shape(x)[0]], tf.bool)
        return probabilities, class_index, raw, min_max(raw), zero


def legrad(gradients: list, rows, grid):
    """LeGrad's map from each explained block's ``∂s_l/∂A_l`` ``(n, heads, T, T)``:
    ``Σ_l`` the read-out ``rows`` (`readout_rows`) of ``mean_heads(ReLU(∂s_l/∂A_l))``
    over the patch columns, ``(n, height, width)``, before the min-max normalisation."""
    tf = tensorflow()
    return tf.add_n([patch_map(tf.matmul(rows, tf.reduce_mean(tf.nn.relu(g), axis=1)), grid)
                     for g in gradients])


def min_max(raw):
    """Each map ``(n, h, w)`` scaled to [0, 1] by its minimum and maximum; a constant map
    is all zero."""
    tf = tensorflow()
    low = tf.reduce_min(raw, axis=[1, 2], keepdims=True)
    high = tf.reduce_max(raw, axis=[1, 2], keepdims=True)
    return tf.math.divide_no_nan(raw - low, high - low)


def rollout(attentions: list, rows, head_fusion: str = HEAD_FUSION,
            discard_ratio: float = DISCARD_RATIO, keep_first: bool = True):
    """``rows`` ``(n, k, T)`` times the attention rollout ``R = Â_L ⋯ Â_1`` of the blocks'
    attention ``(n, heads, T, T)``, first block first: ``(n, k, T)``. ``keep_first``:
    never discard the first token's attention to itself (the read-out's own entry, with a
    class token). Rows times matrices from the last block down: ``T²`` a block and row,
    not the ``T³`` of the whole product."""
    tf = tensorflow()
    tokens = attentions[0].shape[-1]
    eye = tf.eye(tokens, dtype=tf.float32)
    fuse = {"mean": tf.reduce_mean, "max": tf.reduce_max, "min": tf.reduce_min}[head_fusion]
    result = rows
    for attention in reversed(attentions):
        fused = fuse(attention, axis=1)
        if discard_ratio > 0:
            fused = _discarded(fused, discard_ratio, keep_first)
        step = 0.5 * fused + 0.5 * eye
        step = step / tf.reduce_sum(step, axis=-1, keepdims=True)
        result = tf.matmul(result, step)
    return result


def _discarded(fused, ratio: float, keep_first: bool):
    """``fused`` ``(n, T, T)`` with its ``int(T² · ratio)`` lowest entries per image set to
    zero (of equal entries, the later ones first), except entry (0, 0) with
    ``keep_first``."""
    tf = tensorflow()
    tokens = fused.shape[-1]
    flat = tf.reshape(fused, [-1, tokens * tokens])
    count = int(tokens * tokens * ratio)
    if count == 0:
        return fused
    # The kept entries are the top T² - count (top_k takes the earlier of equal entries):
    # a shorter sort than the lowest count's when most are dropped, as vit-explain's 0.9.
    kept = tf.math.top_k(flat, k=tokens * tokens - count).indices
    rows = tf.broadcast_to(tf.range(tf.shape(flat)[0])[:, None], tf.shape(kept))
    # A scatter, not a one-hot of (n, kept, T²): ViT-B's 197 tokens would need 20 GB.
    keep = tf.scatter_nd(tf.stack([rows, kept], axis=-1), tf.ones(tf.shape(kept), flat.dtype),
                         tf.shape(flat))
    if keep_first:
        keep = tf.maximum(keep, tf.concat([tf.ones([1], flat.dtype),
                                           tf.zeros([tokens * tokens - 1], flat.dtype)], 0))
    return tf.reshape(flat * keep, tf.shape(fused))


def gradient_rollout(attentions: list, gradients: list, rows):
    """``rows`` ``(n, k, T)`` times Chefer et al.'s relevance of the blocks' attention and
    its gradients, first block first (``R = I``, then ``R ← R + mean_heads((∇A ⊙ A)⁺) R``,
    so ``R = (I + Ā_L) ⋯ (I + Ā_1)``): ``(n, k, T)``, from the last block down. A block
    whose gradient Keras gives as None adds nothing."""
    tf = tensorflow()
    result = rows
    for attention, gradient in reversed(list(zip(attentions, gradients, strict=True))):
        if gradient is None:
            continue
        weighted = tf.reduce_mean(tf.nn.relu(gradient * attention), axis=1)
        result = result + tf.matmul(result, weighted)
    return result


def readout_rows(readout: str, grid, attention):
    """The read-out as one row per image, ``(n, 1, T)`` for ``attention`` ``(n, heads, T,
    T)``: the first token's (``token``), or the mean of the patch rows (``mean``)."""
    tf = tensorflow()
    tokens = attention.shape[-1]
    if readout == "token":
        row = tf.one_hot(0, tokens, dtype=tf.float32)
    else:
        patches = tokens - grid.prefix
        row = tf.concat([tf.zeros([grid.prefix]), tf.fill([patches], 1.0 / patches)], 0)
    return tf.tile(row[None, None], [tf.shape(attention)[0], 1, 1])


def patch_map(rows, grid):
    """The read-out rows ``(n, 1, T)`` over the patch columns, as ``(n, height, width)``
    maps laid out on ``grid`` (its prefix tokens left out)."""
    return tensorflow().reshape(rows[:, 0, grid.prefix:], [-1, grid.height, grid.width])
