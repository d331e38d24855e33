"""Tiny keras-hub vision transformers with random weights (nothing downloaded), and a
Grad-CAM computed the way the issue asks for a reference: by intercepting the target
layer's call in the test itself, without camcli's code.

Each model takes 32x32 images in [0, 255] and ends in a softmax classifier of 3 classes.
"""

from __future__ import annotations

import numpy as np

SIZE = 32
CLASSES = 3


def vit(keras, num_layers=2, pooling="token"):
    """ViTImageClassifier: a class token, 4x4 patches of 8."""
    import keras_hub

    keras.utils.set_random_seed(1)
    backbone = keras_hub.models.ViTBackbone(
        image_shape=(SIZE, SIZE, 3), patch_size=8, num_layers=num_layers, num_heads=2,
        hidden_dim=16, mlp_dim=32)
    return keras_hub.models.ViTImageClassifier(backbone=backbone, num_classes=CLASSES,
                                               pooling=pooling, activation="softmax")


def deit(keras):
    """DeiTImageClassifier: class and distillation tokens (2 prefix tokens)."""
    import keras_hub

    keras.utils.set_random_seed(2)
    backbone = keras_hub.models.DeiTBackbone(
        image_shape=(SIZE, SIZE, 3), patch_size=8, num_layers=2, num_heads=2, hidden_dim=16,
        intermediate_dim=32)
    return keras_hub.models.DeiTImageClassifier(backbone=backbone, num_classes=CLASSES,
                                                activation="softmax")


def swin(keras):
    """SwinTransformerImageClassifier: hierarchical (8x8, then 4x4 tokens), no class
    token, a mean-pooled head."""
    import keras_hub

    keras.utils.set_random_seed(3)
    backbone = keras_hub.models.SwinTransformerBackbone(
        image_shape=(SIZE, SIZE, 3), embed_dim=8, depths=[2, 2], num_heads=[1, 2],
        window_size=4, patch_size=4)
    return keras_hub.models.SwinTransformerImageClassifier(
        backbone=backbone, num_classes=CLASSES, activation="softmax")


def dinov2(keras):
    """A DINOv2 backbone with 4 register tokens, inside a functional classifier with a
    Rescaling in front: keras-hub has no DINOv2 classifier, so users build this."""
    import keras_hub

    keras.utils.set_random_seed(4)
    backbone = keras_hub.models.DINOV2Backbone(
        patch_size=8, num_layers=2, hidden_dim=16, num_heads=2, intermediate_dim=32,
        num_register_tokens=4, image_shape=(SIZE, SIZE, 3),
        position_embedding_shape=(SIZE, SIZE, 3))
    inputs = keras.Input((SIZE, SIZE, 3), name="photo")
    scaled = keras.layers.Rescaling(1 / 255.0, name="scale")(inputs)
    tokens = backbone(scaled)
    outputs = keras.layers.Dense(CLASSES, activation="softmax", name="predictions")(
        tokens[:, 0])
    return keras.Model(inputs, outputs, name="dino_classifier")


def wrapped(keras, inner):
    """``inner`` (a keras-hub classifier) inside a functional model, a Rescaling in
    front."""
    inputs = keras.Input((SIZE, SIZE, 3), name="photo")
    scaled = keras.layers.Rescaling(1 / 255.0, name="scale")(inputs)
    return keras.Model(inputs, inner(scaled), name="wrapped")


def find(layer, path: str):
    """The layer at '/'-separated ``path`` below ``layer`` (models and tracked layers)."""
    for name in path.split("/"):
        children = layer._flatten_layers(include_self=False, recursive=False)
        layer = next(child for child in children if child.name == name)
    return layer


def write_photos(folder, seed: int, count: int = 3) -> None:
    """``count`` random PNGs of the models' size (lossless: no resize changes them),
    ``p0.png``..."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for number, pixels in enumerate(rng.integers(0, 256, (count, SIZE, SIZE, 3), np.uint8)):
        Image.fromarray(pixels).save(folder / f"p{number}.png")


def read_photos(folder, count: int = 3) -> np.ndarray:
    """The pixels of `write_photos`' PNGs, float32 ``(count, SIZE, SIZE, 3)``."""
    from PIL import Image

    return np.stack([np.asarray(Image.open(folder / f"p{number}.png"), np.float32)
                     for number in range(count)])


def top_class_score(model, head, batch):
    """Run ``model`` on ``batch`` (inside the caller's gradient tape): the summed
    pre-softmax logit of each image's top class, from a spy on the ``head`` Dense layer's
    call (its input times its kernel, plus its bias), and the top classes."""
    import tensorflow as tf

    seen = {}
    original = head.call

    def call(*args, **kwargs):
        seen["head"] = args[0]
        return original(*args, **kwargs)

    object.__setattr__(head, "call", call)
    try:
        model(tf.constant(batch), training=False)
    finally:
        object.__delattr__(head, "call")
    logits = tf.matmul(seen["head"], head.kernel) + head.bias
    top = tf.argmax(logits, axis=-1)
    return tf.reduce_sum(tf.gather(logits, top, batch_dims=1)), top


def reference_gradcam(model, target, side, head, batch, prefix, grid):
    """Grad-CAM maps of each image's top class at ``target``'s input or output, by a
    spy on its ``call`` (and on the ``head`` Dense layer's, for the pre-softmax logit)."""
    import tensorflow as tf

    seen = {}
    original = target.call

    def call(*args, **kwargs):
        if side == "input":
            seen[side] = args[0]
        out = original(*args, **kwargs)
        if side == "output":
            seen[side] = out
        return out

    object.__setattr__(target, "call", call)
    try:
        with tf.GradientTape() as tape:
            score, top = top_class_score(model, head, batch)
        tokens = seen[side]
        gradient = tape.gradient(score, tokens).numpy()
    finally:
        object.__delattr__(target, "call")
    height, width = grid
    n, _, channels = tokens.shape
    features = tokens.numpy()[:, prefix:].reshape(n, height, width, channels)
    gradient = gradient[:, prefix:].reshape(n, height, width, channels)
    weights = gradient.mean(axis=(1, 2))
    maps = np.maximum(np.einsum("nhwc,nc->nhw", features, weights), 0)
    peak = maps.max(axis=(1, 2), keepdims=True)
    return np.divide(maps, peak, out=np.zeros_like(maps), where=peak > 0), top.numpy()


def attention_layers(model) -> list:
    """Every MultiHeadAttention under ``model``, in the order the model tracks them (its
    blocks' order), each with the layers above it: ``(layer, ancestors)``."""
    import keras

    found = []

    def walk(layer, above):
        for child in layer._flatten_layers(include_self=False, recursive=False):
            if isinstance(child, keras.layers.MultiHeadAttention):
                found.append((child, above))
            else:
                walk(child, (*above, child))

    walk(model, ())
    return found


def reference_attention(model, head, batch):
    """Every MultiHeadAttention's probabilities (in the order the model tracks them: its
    blocks' order) and their gradients of each image's top class's pre-softmax logit, by
    a spy on each layer's ``call`` asking it for its scores (and on the ``head`` Dense
    layer's, for the logit); numpy, and the top classes."""
    import tensorflow as tf

    found = [layer for layer, _ in attention_layers(model)]
    seen: dict[int, object] = {}

    def spy(layer, number):
        original = layer.call

        def call(*args, **kwargs):
            kwargs["return_attention_scores"] = True
            output, scores = original(*args, **kwargs)
            seen[number] = scores
            return output

        object.__setattr__(layer, "call", call)

    for number, layer in enumerate(found):
        spy(layer, number)
    try:
        with tf.GradientTape() as tape:
            score, top = top_class_score(model, head, batch)
        scores = [seen[n] for n in range(len(found))]
        gradients = tape.gradient(score, scores)
    finally:
        for layer in found:
            object.__delattr__(layer, "call")
    return ([s.numpy() for s in scores], [g.numpy() for g in gradients], top.numpy())


def reference_legrad(model, head, final_norm, pooling, batch):
    """LeGrad's ingredients by spies of the test's own: per block, ``∂s_l/∂A_l``, where
    ``s_l`` is each image's top class's pre-softmax logit with the model's head written
    out by hand on block ``l``'s output tokens: ``final_norm`` (the model's last
    LayerNormalization), the ``pooling`` (``token``: the first token; ``mean``: all
    tokens' mean), then the ``head`` Dense layer's kernel and bias. The blocks are the
    layers in which the MultiHeadAttentions' paths part. Numpy, and the top classes."""
    import tensorflow as tf

    found = attention_layers(model)
    depth = next(d for d in range(len(found[0][1]))
                 if found[0][1][d] is not found[1][1][d])
    blocks = [above[depth] for _, above in found]
    seen: dict = {}

    def spy(layer, key, attention):
        original = layer.call

        def call(*args, **kwargs):
            if attention:
                kwargs["return_attention_scores"] = True
                output, scores = original(*args, **kwargs)
                seen[key] = scores
                return output
            output = original(*args, **kwargs)
            seen[key] = output[0] if isinstance(output, tuple) else output
            return output

        object.__setattr__(layer, "call", call)

    for number, (layer, _) in enumerate(found):
        spy(layer, ("attention", number), True)
        spy(blocks[number], ("block", number), False)
    try:
        with tf.GradientTape(persistent=True) as tape:
            _, top = top_class_score(model, head, batch)
            scores = []
            for number in range(len(found)):
                tokens = final_norm(seen["block", number])
                pooled = tokens[:, 0] if pooling == "token" else tf.reduce_mean(tokens, 1)
                logits = tf.matmul(pooled, head.kernel) + head.bias
                scores.append(tf.reduce_sum(tf.gather(logits, top, batch_dims=1)))
        gradients = [tape.gradient(scores[n], seen["attention", n]).numpy()
                     for n in range(len(found))]
    finally:
        for layer, _ in found:
            object.__delattr__(layer, "call")
        for block in blocks:
            object.__delattr__(block, "call")
    return gradients, top.numpy()
