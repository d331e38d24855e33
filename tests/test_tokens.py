"""Token layers (vision transformers): tokens to a grid, and maps equal to a CNN's when the
tokens are that CNN's feature map plus a class token the head ignores."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import run, seeded_weights, write_image

from camcli.compute.methods import METHODS
from camcli.compute.models import graph
from camcli.compute.models.tokens import TokenGrid, infer, to_grid
from camcli.errors import LayerError


@pytest.mark.parametrize("prefix", [0, 1, 2, 5])
def test_token_k_goes_to_cell_k_div_w_k_mod_w(prefix):
    height, width = 3, 5  # not square
    tokens = prefix + height * width
    values = np.arange(tokens, dtype=np.float32)[None, :, None].repeat(2, axis=2)
    cells = to_grid(values, TokenGrid(prefix, height, width)).numpy()[0, :, :, 0]
    for k in range(height * width):
        assert cells[k // width, k % width] == prefix + k


@pytest.mark.parametrize("tokens, size, want", [
    (197, (224, 224), TokenGrid(1, 14, 14)),  # ViT-B/16: a class token
    (198, (224, 224), TokenGrid(2, 14, 14)),  # DeiT: class and distillation tokens
    (261, (224, 224), TokenGrid(5, 16, 16)),  # DINOv2/14: a class token and 4 registers
    (49, (224, 224), TokenGrid(0, 7, 7)),  # Swin's last stage: no class token
    (129, (128, 256), TokenGrid(1, 8, 16)),  # not square
])
def test_the_grid_follows_from_the_tokens_and_the_input(tokens, size, want):
    assert infer(tokens, size, "blocks") == want


def test_an_ambiguous_grid_is_an_error_naming_the_options():
    # 5 tokens of an 8x8 input: 1 + 2x2 patches of 4, or 4 + one patch of 8.
    with pytest.raises(LayerError) as info:
        infer(5, (8, 8), "blocks")
    assert str(info.value) == ("layer 'blocks' has 5 tokens, which read as several grids "
                               "(2x2 after 1, 1x1 after 4); give token_grid and prefix_tokens")
    assert infer(5, (8, 8), "blocks", grid=(2, 2)) == TokenGrid(1, 2, 2)
    assert infer(5, (8, 8), "blocks", prefix=4) == TokenGrid(4, 1, 1)
    with pytest.raises(LayerError, match="which a 2x2 grid and 2 prefix tokens do not make"):
        infer(5, (8, 8), "blocks", grid=(2, 2), prefix=2)
    with pytest.raises(LayerError, match="which no square patches of the 30x30 input make"):
        infer(50, (30, 30), "blocks")  # 42 to 50 patches: none is a square of 30 / k


@pytest.fixture(scope="module")
def twins(keras):
    """A CNN, and the same CNN whose feature map becomes 64 tokens behind a class token
    that the head drops (Cropping1D): both give the same logits."""
    inputs = keras.Input((16, 16, 3))
    feat = keras.layers.Conv2D(5, 3, strides=2, padding="same", activation="relu",
                               name="feat")(inputs)
    pooled = keras.layers.GlobalAveragePooling2D(name="gap")(feat)
    cnn = keras.Model(inputs, keras.layers.Dense(3, activation="softmax", name="fc")(pooled))
    seeded_weights(cnn, seed=6)

    patches = keras.layers.Reshape((64, 5), name="patches")(cnn.get_layer("feat").output)
    cls = keras.layers.Reshape((1, 5), name="cls_shape")(
        keras.layers.GlobalMaxPooling2D(name="cls")(cnn.get_layer("feat").output))
    tokens = keras.layers.Concatenate(axis=1, name="tokens")([cls, patches])
    kept = keras.layers.Cropping1D((1, 0), name="drop_cls")(tokens)
    pooled = keras.layers.GlobalAveragePooling1D(name="gap1d")(kept)
    head = keras.layers.Dense(3, activation="softmax", name="fc_t")
    vit = keras.Model(cnn.inputs, head(pooled))
    head.set_weights(cnn.get_layer("fc").get_weights())
    return cnn, vit


# CAM needs a pooled convolutional head; FullGrad chooses its own layers (biases); the
# attention methods read attention, which a reshaped feature map has none of.
@pytest.mark.parametrize("name", sorted(name for name, kind in METHODS.items()
                                         if name not in ("cam", "fullgrad")
                                         and not kind.reads_attention))
def test_a_token_layer_explains_like_the_feature_map_it_holds(twins, name):
    cnn, vit = twins
    batch = np.random.default_rng(2).uniform(0, 1, (3, 16, 16, 3)).astype(np.float32)
    tokens = graph.build(vit, "tokens")
    assert tokens.grids == [TokenGrid(1, 8, 8)]
    want = METHODS[name](graph.build(cnn, "feat"))(batch, np.array([0, 1, 2], np.int32))
    got = METHODS[name](tokens)(batch, np.array([0, 1, 2], np.int32))
    np.testing.assert_allclose(got.probabilities, want.probabilities, atol=1e-6)
    np.testing.assert_allclose(got.maps, want.maps, atol=1e-5)


def test_cam_refuses_a_token_layer(twins):
    from camcli.errors import CamNotApplicable

    with pytest.raises(CamNotApplicable):
        METHODS["cam"](graph.build(twins[1], "tokens"))


def test_tokens_end_to_end_and_in_camcli_layers(twins, tmp_path):
    _, vit = twins
    path = tmp_path / "vit.keras"
    vit.save(path)
    listed = {row["address"]: row for row in json.loads(
        run(["layers", str(path), "--format", "json"]).stdout)}
    assert listed["tokens"]["grid"] == [8, 8] and listed["tokens"]["prefix_tokens"] == 1
    assert listed["feat"]["grid"] is None and listed["feat"]["default"]
    photo = write_image(tmp_path / "in" / "x.png", size=(40, 30))
    result = run(["batch", str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--model",
                  str(path), "--layer", "tokens", "--device", "cpu", "--save-maps", "-q"])
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "out" / "manifest.jsonl").read_text())
    assert record["layer"] == "tokens" and record["error"] is None
    assert np.load(tmp_path / "out" / record["map"]).shape == (8, 8)  # the patch grid
    assert (tmp_path / "out" / record["output"]).is_file() and photo.is_file()
    wrong = run(["batch", str(tmp_path / "in"), "--out", str(tmp_path / "o2"), "--model",
                 str(path), "--layer", "tokens", "--token-grid", "4x4", "--device", "cpu"])
    assert wrong.exit_code == 2
    assert wrong.stderr.strip().splitlines()[-1] == (
        "Error: layer 'tokens' has 65 tokens: a 4x4 grid leaves 49 before the patches; give "
        "--prefix-tokens too if that is right")
