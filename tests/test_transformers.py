"""keras-hub's vision transformers end to end: blocks reached by call interception, their
tokens laid out as a grid from the model's config, maps equal to a reference computed in
the test by its own spy on the block's call, and what a user is told along the way."""

from __future__ import annotations

import json
import sys

import hub_models
import numpy as np
import pytest
from conftest import run
from PIL import Image

from camcli.compute.methods import METHODS
from camcli.compute.models import capture, graph
from camcli.errors import LayerError, ModelError, UsageProblem

#: the methods that guide the gradient through ReLUs, which a transformer has not
GUIDED = ("guided-gradcam", "guidedbackprop")

#: model -> (its default address below the outer model, prefix tokens, grid)
DEFAULTS = {
    "vit": ("{backbone}/vit_encoder/transformer_block_2/ln_1", 1, (4, 4)),
    "deit": ("{backbone}/deit_encoder/transformer_block_2/ln_1", 2, (4, 4)),
    "swin": ("{backbone}/stage_1/blocks_1/norm1", 0, (4, 4)),
    "dinov2": ("{backbone}/{backbone}_encoder/layers_1/norm1", 5, (4, 4)),
}


def _backbone(model):
    return model.backbone.name if hasattr(model, "backbone") else \
        next(layer.name for layer in model.layers if "backbone" in layer.name)


@pytest.fixture(scope="module")
def hub(keras, tmp_path_factory):
    """Each model as saved to a .keras file and loaded back (keras-hub names some layers
    anew on loading), the file, and its default address."""
    folder = tmp_path_factory.mktemp("hub")
    made = {}
    for name in DEFAULTS:
        model = getattr(hub_models, name)(keras)
        path = folder / f"{name}.keras"
        model.save(path)
        model = keras.saving.load_model(path)
        address = DEFAULTS[name][0].format(backbone=_backbone(model))
        made[name] = (model, str(path), address)
    return made


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Three 32x32 PNGs (lossless, at the models' size: no resize changes them)."""
    folder = tmp_path_factory.mktemp("photos")
    hub_models.write_photos(folder, seed=5)
    return folder


@pytest.mark.parametrize("name", list(DEFAULTS))
@pytest.mark.parametrize("where", ["default", "block input"])
def test_batch_explains_the_last_block_and_equals_an_interception_reference(
        name, where, hub, photos, tmp_path):
    """By default the last block's first LayerNormalization; asked for, the last block's
    input (the block is the default's parent)."""
    model, path, address = hub[name]
    out = tmp_path / "out"
    asked = []
    if where == "block input":
        address = address.rsplit("/", 1)[0] + ":input"
        asked = ["--layer", address]
    result = run(["batch", str(photos), "--out", str(out), "--model", path, "--save-maps",
                  "--method", "gradcam", "--device", "cpu", *asked])
    assert result.exit_code == 0, result.output
    _, prefix, grid = DEFAULTS[name]
    if not asked:
        assert (f"target layer: {address} (a transformer's last block's first "
                "LayerNormalization, found automatically)") in result.stderr
    assert f"layer {address}: {prefix} prefix tokens, then a 4x4 grid of patches" in \
        result.stderr
    records = {r["input"]: r for r in map(json.loads, (out / "manifest.jsonl").open())}
    block, _, side = address.partition(":")
    side = side or "output"
    want, top = hub_models.reference_gradcam(
        model, hub_models.find(model, block), side, model.get_layer("predictions"),
        hub_models.read_photos(photos), prefix, grid)
    for number in range(3):
        record = records[str(photos / f"p{number}.png")]
        assert record["layer"] == address and record["method"] == "gradcam"
        assert record["tokens"] == f"{prefix}+{grid[0]}x{grid[1]}"
        assert record["class_index"] == top[number]
        got = np.load(out / record["map"])
        assert got.shape == grid
        np.testing.assert_allclose(got, want[number], atol=1e-5)
        assert Image.open(out / record["output"]).size == (hub_models.SIZE, hub_models.SIZE)


def test_the_grid_is_part_of_the_request_resume_keys_on(hub, photos, tmp_path):
    """The same grid, found or given, is the same request: resume skips; another grid is
    another request: redone."""
    _, path, address = hub["deit"]
    out = str(tmp_path / "out")
    common = ["batch", str(photos), "--out", out, "--model", path, "--method", "gradcam",
              "--device", "cpu"]
    assert run(common).exit_code == 0
    again = run([*common, "--token-grid", "4x4", "--prefix-tokens", "2"])
    assert "0 written, 3 already done" in again.stderr, again.stderr
    other = run([*common, "--token-grid", "2x8"])  # 16 patches read as 2 rows of 8
    assert "3 written, 0 already done" in other.stderr, other.stderr
    records = [json.loads(line) for line in open(f"{out}/manifest.jsonl")]
    assert [r["tokens"] for r in records] == ["2+4x4"] * 3 + ["2+2x8"] * 3


def test_any_block_input_or_output_inside_a_nested_classifier(keras, hub, photos):
    """A keras-hub classifier inside a functional model with a Rescaling in front: the
    path goes through both models and the encoder's tracked blocks; the score is the
    pre-softmax logit of the inner classifier's Dense."""
    inner = hub_models.vit(keras)
    outer = hub_models.wrapped(keras, inner)
    batch = hub_models.read_photos(photos)
    encoder = f"{inner.name}/{inner.backbone.name}/vit_encoder"
    for block, side in [("transformer_block_1", "input"), ("transformer_block_1", "output"),
                        ("transformer_block_2", "input")]:
        address = f"{encoder}/{block}" + (":input" if side == "input" else "")
        explained = graph.build(outer, address)
        assert explained.output_kind == "softmax"
        got = METHODS["gradcam"](explained)(batch)
        want, top = hub_models.reference_gradcam(
            outer, hub_models.find(outer, f"{encoder}/{block}"), side,
            hub_models.find(outer, f"{inner.name}/predictions"), batch, 1,
            (4, 4))
        np.testing.assert_array_equal(got.class_index, top)
        np.testing.assert_allclose(got.maps, want, atol=1e-5)
        # the block's own call is back: nothing of the capture stays on the layer
        assert "call" not in hub_models.find(outer, f"{encoder}/{block}").__dict__


@pytest.mark.parametrize("method", sorted(
    name for name, kind in METHODS.items()
    if name not in ("cam", "scorecam", "fullgrad", *GUIDED) and not kind.reads_attention))
def test_every_method_runs_at_a_block_and_gives_maps_of_the_grid(method, hub, photos):
    model, _, default = hub["deit"]
    address = default.rsplit("/", 1)[0] + ":input"  # the last block's input
    result = METHODS[method](graph.build(model, address))(hub_models.read_photos(photos))
    assert result.maps.shape == (3, 4, 4)
    assert np.isfinite(result.maps).all() and result.maps.max() == pytest.approx(1.0)


@pytest.mark.parametrize("method", GUIDED)
def test_guided_methods_refuse_a_transformer_it_has_no_relu(method, hub):
    """A transformer's GELUs are no rectifiers: a guided map would be the plain gradient."""
    model, _, default = hub["deit"]
    message = (f"{method} guides the gradient through the model's ReLUs, and this model has "
               "none (a transformer's GELUs, for one): its map would be the plain gradient; "
               "use another method")
    with pytest.raises(UsageProblem) as refused:
        METHODS[method](graph.build(model, default.rsplit("/", 1)[0] + ":input"))
    assert str(refused.value) == message


def test_cam_at_a_block_says_why_not(hub):
    model, _, address = hub["vit"]
    with pytest.raises(Exception, match="is inside another layer, not a layer's output"):
        METHODS["cam"](graph.build(model, address))


def test_zero_gradients_at_the_last_blocks_output_are_said_once(hub, photos, tmp_path):
    """A class-token head reads nothing of the patches after the last block: their
    gradients are zero there, and the run says so (once), naming the layer and the fix."""
    model, path, default = hub["vit"]
    output = default.rsplit("/", 1)[0]  # the last block
    address = f"{output}:input"
    result = run(["batch", str(photos), "--out", str(tmp_path / "o"), "--model", path,
                  "--layer", output, "--batch-size", "1", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    warning = (f"gradcam: the gradients at layer {output} are all zero for 1 of 1 images in "
               "a batch, so their maps are blank; the head reads only the prefix tokens "
               f"there; explain the block's input instead (--layer {address}, 'camcli "
               "layers MODEL' lists the blocks)")
    assert result.stderr.count(warning) == 1, result.stderr
    quiet = run(["batch", str(photos), "--out", str(tmp_path / "q"), "--model", path,
                 "--method", "gradcam", "--device", "cpu"])
    assert "all zero" not in quiet.stderr


def test_layers_lists_blocks_with_their_grids_and_the_default(hub):
    model, path, address = hub["dinov2"]
    result = run(["layers", path, "--format", "json"])
    assert result.exit_code == 0, result.output
    listed = {entry["address"]: entry for entry in json.loads(result.stdout)}
    assert [a for a, e in listed.items() if e["default"]] == [address]
    assert listed[address] == {"address": address, "shape": [None, 21, 16], "grid": [4, 4],
                               "prefix_tokens": 5, "default": True}
    backbone = _backbone(model)
    embedding = listed[f"{backbone}/{backbone}_embeddings/patch_embeddings/projection"]
    assert embedding["shape"] == [None, 4, 4, 16] and embedding["grid"] is None
    assert listed["scale"]["shape"] == [None, 32, 32, 3]
    # Swin: stage 0's blocks hold 8x8 tokens, stage 1's 4x4; no window tensors listed
    _, swin_path, _ = hub["swin"]
    swin = {e["address"]: e for e in json.loads(run(["layers", swin_path, "--format",
                                                     "json"]).stdout)}
    first = [e for a, e in swin.items() if a.endswith("stage_0/blocks_0")][0]
    assert (first["grid"], first["prefix_tokens"]) == ([8, 8], 0)
    # its windows (4 per image of 8x8 tokens) are no rows of images: not listed
    assert not any(a.endswith("stage_0/blocks_0/attn") for a in swin)
    table = run(["layers", path]).stdout
    assert [address, "21x16", "tokens:", "5", "+", "4x4", "(default)"] in \
        [line.split() for line in table.splitlines()]


def test_the_config_settles_a_grid_the_token_count_cannot(keras):
    """5 tokens of a 16x16 input read as 1 + 2x2 or 4 + 1x1; the ViT's config (patch 8)
    says which, so no option is needed."""
    import keras_hub

    backbone = keras_hub.models.ViTBackbone(image_shape=(16, 16, 3), patch_size=8,
                                            num_layers=1, num_heads=1, hidden_dim=4,
                                            mlp_dim=8)
    model = keras_hub.models.ViTImageClassifier(backbone=backbone, num_classes=2,
                                                activation="softmax")
    explained = graph.build(model, "transformer_block_1:input")
    assert explained.grids[0].prefix == 1
    assert (explained.grids[0].height, explained.grids[0].width) == (2, 2)


def test_a_window_tensor_is_refused_with_its_reason(hub):
    model, _, _ = hub["swin"]
    with pytest.raises(LayerError, match="does not hold one row per image"):
        graph.build(model, f"{_backbone(model)}/stage_0/blocks_0/attn")
    graph.build(model, f"{_backbone(model)}/stage_1/blocks_0/attn")  # 1 window: the image


def test_the_call_is_restored_when_the_pass_fails(hub):
    model, _, address = hub["vit"]
    block = hub_models.find(model, address.split(":")[0])

    class Boom(Exception):
        pass

    with pytest.raises(Boom), capture.Captured([(block, "input")]).during():
        assert "call" in block.__dict__
        raise Boom
    assert "call" not in block.__dict__


def test_a_keras_hub_file_without_keras_hub_names_the_extra(hub, monkeypatch):
    from camcli.compute.models import loading

    monkeypatch.setitem(sys.modules, "keras_hub", None)
    _, path, _ = hub["vit"]
    with pytest.raises(ModelError) as info:
        loading._needs_hub(path)
    assert str(info.value) == (f"model file {path} holds a keras-hub model, and keras-hub "
                               "is not installed: pip install 'camcli[hub]'")
