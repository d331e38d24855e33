"""A tiny GAP CNN trained here on synthetic photos must *localise*: its CAM peak falls on
the object. This checks the whole chain (graph split, weights, upsampling), not shapes."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from camcli.compute.methods import CAM, GradCAM
from camcli.compute.models import graph

SIZE, SHAPE = 32, 8


def synthetic(count: int, rng: np.random.Generator):
    """Noise (class 0), or noise with one bright 8x8 shape, a filled square or a plus sign,
    at a random place (class 1). Returns images, labels and each shape's box (top, left).

    (Two shape classes were tried: the net learnt "plus" as "bright but not a square" and
    put the plus's evidence off the plus; a presence task has no such shortcut.)"""
    images = rng.uniform(0.0, 0.45, (count, SIZE, SIZE, 3)).astype("float32")
    labels = rng.integers(0, 2, count)
    boxes = rng.integers(0, SIZE - SHAPE + 1, (count, 2))
    plus = np.zeros((SHAPE, SHAPE), bool)
    plus[3:5, :] = plus[:, 3:5] = True
    for image, label, (top, left) in zip(images, labels, boxes, strict=False):
        if label == 0:
            continue
        mask = plus if rng.random() < 0.5 else np.ones((SHAPE, SHAPE), bool)
        image[top:top + SHAPE, left:left + SHAPE][mask] = rng.uniform(0.85, 1.0)
    return images, labels, boxes


@pytest.fixture(scope="module")
def trained(keras):
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    images, labels, _ = synthetic(1200, rng)
    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu")(inputs)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Conv2D(32, 3, padding="same", activation="relu")(x)
    x = keras.layers.Conv2D(32, 3, padding="same", activation="relu", name="last_conv")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(x))
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    model.fit(images, labels, epochs=8, batch_size=32, verbose=0)
    held_out = synthetic(200, np.random.default_rng(1))
    return model, held_out


@pytest.mark.parametrize("method", [CAM, GradCAM])
def test_the_map_peaks_inside_the_shape(trained, method):
    model, (images, labels, boxes) = trained
    result = method(graph.build(model))(images)
    accuracy = float(np.mean(result.class_index == labels))
    assert accuracy >= 0.9, f"the test model did not learn (accuracy {accuracy:.2f})"
    inside, shapes = 0, labels > 0
    for heatmap, (top, left) in zip(result.maps[shapes], boxes[shapes], strict=False):
        upsampled = cv2.resize(heatmap, (SIZE, SIZE), interpolation=cv2.INTER_LINEAR)
        row, col = np.unravel_index(np.argmax(upsampled), upsampled.shape)
        inside += top <= row < top + SHAPE and left <= col < left + SHAPE
    assert inside / shapes.sum() >= 0.9, f"peak inside the shape for {inside}/{shapes.sum()}"
