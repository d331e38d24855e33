"""The cascade of model parameter randomisation: its groups from the top down, which
weights change at each step (and only those), the fixed seed, and the originals put
back."""

from __future__ import annotations

import numpy as np
import pytest

from camcli.compute.models.randomise import CLASSIFIER, STEM, Randomiser, cascade, spread


def named_cnn(keras):
    """keras-applications' naming: a stem, two blocks, then the head."""
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", name="stem_conv")(inputs)
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="block1_conv1")(x)
    x = keras.layers.BatchNormalization(name="block1_bn")(x)
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="block2a_conv1")(x)
    x = keras.layers.Conv2D(4, 1, name="block2a_project")(x)
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    outputs = keras.layers.Dense(3, activation="softmax", name="predictions")(x)
    return keras.Model(inputs, outputs, name="named_cnn")


def values(keras, model) -> dict[str, np.ndarray]:
    return {v.path: keras.ops.convert_to_numpy(v).copy() for v in model.weights}


def layer_of(path: str) -> str:
    return path.split("/")[-2]


def test_the_groups_of_a_named_cnn_from_the_top(keras):
    model = named_cnn(keras)
    groups = cascade(model)
    assert [g.name for g in groups] == [CLASSIFIER, "block2a", "block1", STEM]
    assert [sorted({layer_of(v.path) for v in g.variables}) for g in groups] == [
        ["predictions"], ["block2a_conv1", "block2a_project"], ["block1_bn", "block1_conv1"],
        ["stem_conv"]]
    # Every weight, the batch normalisation's moving statistics too, in one group.
    assert sorted(v.path for g in groups for v in g.variables) == sorted(
        v.path for v in model.weights)


def test_each_step_changes_its_groups_and_no_other_then_all_come_back(keras):
    model = named_cnn(keras)
    # Weights no initialiser gives (a trained model's), so every re-initialised one moves.
    rng = np.random.default_rng(1)
    model.set_weights([rng.uniform(0.5, 1.5, w.shape).astype("float32")
                       for w in model.get_weights()])
    original = values(keras, model)
    groups = cascade(model)
    randomiser = Randomiser(model, groups, seed=7)
    seen = []
    with randomiser.applied():
        for step in range(len(groups)):
            randomiser.through(step)
            now = values(keras, model)
            seen.append(sorted({layer_of(p) for p in now
                                if not np.array_equal(now[p], original[p])}))
        last = values(keras, model)
    assert seen == [
        ["predictions"],
        ["block2a_conv1", "block2a_project", "predictions"],
        ["block1_bn", "block1_conv1", "block2a_conv1", "block2a_project", "predictions"],
        ["block1_bn", "block1_conv1", "block2a_conv1", "block2a_project", "predictions",
         "stem_conv"]]
    # The layer's own initialisers: a batch normalisation's moving variance is ones.
    assert np.array_equal(last["block1_bn/moving_variance"], np.ones(4, np.float32))
    assert np.array_equal(last["block1_bn/gamma"], np.ones(4, np.float32))
    assert not np.allclose(last["predictions/kernel"], 0)
    # Put back, bit for bit.
    assert all(np.array_equal(v, original[p]) for p, v in values(keras, model).items())
    # The same seed gives the same randomised model; another seed another one.
    again = Randomiser(model, groups, seed=7)
    with again.applied():
        again.through(len(groups) - 1)
        assert all(np.array_equal(v, last[p]) for p, v in values(keras, model).items())
    other = Randomiser(model, groups, seed=8)
    with other.applied():
        other.through(0)
        assert not np.array_equal(values(keras, model)["predictions/kernel"],
                                  last["predictions/kernel"])


def test_a_model_without_named_blocks_goes_layer_by_layer(keras):
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(2, 3, name="first")(inputs)
    x = keras.layers.ReLU(name="relu")(x)
    x = keras.layers.Conv2D(2, 3, name="second")(x)
    x = keras.layers.Flatten(name="flat")(x)
    model = keras.Model(inputs, keras.layers.Dense(2, name="out")(x))
    assert [g.name for g in cascade(model)] == ["out", "second", "first"]


def test_a_transformer_goes_block_by_block(keras):
    import hub_models

    model = hub_models.vit(keras, num_layers=3)
    groups = cascade(model)
    assert [g.name.rsplit("/", 1)[-1] for g in groups] == [
        CLASSIFIER, "transformer_block_3", "transformer_block_2", "transformer_block_1", STEM]
    # The classifier is the encoder's final norm and the dense head; the stem the patch
    # and position embeddings (and the class token).
    assert {layer_of(v.path) for v in groups[0].variables} >= {"ln"}
    assert len(groups[-1].variables) >= 3


@pytest.mark.parametrize(("count", "steps", "expected"), [
    (18, None, list(range(18))), (18, 40, list(range(18))), (18, 1, [17]),
    (18, 2, [0, 17]), (18, 4, [0, 6, 11, 17]), (5, 3, [0, 2, 4])])
def test_steps_are_spread_evenly_from_the_classifier_to_the_whole_model(count, steps,
                                                                        expected):
    assert spread(count, steps) == expected
