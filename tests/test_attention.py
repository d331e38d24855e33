"""The attention methods, rollout, gradient-weighted rollout (Chefer et al. 2021) and
LeGrad (Bousselham et al. 2024), against NumPy written from the papers' formulas: on
attention matrices and gradients written out by hand (2 blocks, 2 heads, 2 prefix tokens
and a 2x2 grid of patches), and end to end on tiny keras-hub ViT, DeiT and DINOv2 models,
whose attention, blocks and gradients the reference captures with its own spies on each
MultiHeadAttention's and block's call."""

from __future__ import annotations

import json

import hub_models
import numpy as np
import pytest
from conftest import run

pytest.importorskip("keras_hub", reason="the attention methods' tests need camcli[hub]")

# -- the formulas, on matrices written by hand ----------------------------------------------

#: Block 1 and block 2, head 1 and head 2: (heads, tokens, tokens), rows summing to 1.
#: Tokens 0 and 1 are prefix tokens (class, distillation); 2..5 the patches, row-major.
A1 = np.array([[[0.5, 0.1, 0.1, 0.1, 0.1, 0.1],
                [0.2, 0.4, 0.1, 0.1, 0.1, 0.1],
                [0.1, 0.1, 0.5, 0.1, 0.1, 0.1],
                [0.0, 0.1, 0.2, 0.5, 0.1, 0.1],
                [0.1, 0.0, 0.1, 0.2, 0.4, 0.2],
                [0.1, 0.1, 0.0, 0.1, 0.3, 0.4]],
               [[0.2, 0.0, 0.4, 0.1, 0.1, 0.2],
                [0.1, 0.5, 0.1, 0.1, 0.1, 0.1],
                [0.3, 0.1, 0.2, 0.2, 0.1, 0.1],
                [0.1, 0.1, 0.1, 0.1, 0.5, 0.1],
                [0.25, 0.25, 0.0, 0.0, 0.25, 0.25],
                [0.0, 0.2, 0.2, 0.2, 0.2, 0.2]]])
A2 = np.array([[[0.1, 0.1, 0.1, 0.6, 0.05, 0.05],
                [0.3, 0.3, 0.1, 0.1, 0.1, 0.1],
                [0.1, 0.2, 0.3, 0.2, 0.1, 0.1],
                [0.2, 0.0, 0.2, 0.2, 0.2, 0.2],
                [0.0, 0.0, 0.5, 0.0, 0.5, 0.0],
                [0.1, 0.1, 0.1, 0.1, 0.1, 0.5]],
               [[0.3, 0.2, 0.0, 0.1, 0.0, 0.4],
                [0.1, 0.1, 0.2, 0.2, 0.2, 0.2],
                [0.0, 0.0, 0.0, 0.5, 0.5, 0.0],
                [0.4, 0.1, 0.1, 0.1, 0.2, 0.1],
                [0.2, 0.2, 0.2, 0.2, 0.1, 0.1],
                [0.05, 0.05, 0.3, 0.3, 0.2, 0.1]]])
#: The score's gradients with respect to them, of both signs.
G1 = np.array([[[1.0, -0.5, 0.0, 2.0, 0.0, -1.0],
                [0.0, 0.5, 1.0, 0.0, -2.0, 0.0],
                [-1.0, 0.0, 1.5, 0.5, 0.0, 0.0],
                [0.0, 1.0, 0.0, -0.5, 1.0, 2.0],
                [0.5, 0.0, -1.0, 0.0, 1.0, 0.0],
                [0.0, 0.0, 2.0, 1.0, -1.0, 0.5]],
               [[-1.0, 0.0, 1.0, 0.0, 2.0, 0.5],
                [0.0, 1.0, 0.0, 0.0, 0.0, -1.0],
                [2.0, 0.0, -0.5, 1.0, 0.0, 0.0],
                [0.0, -1.0, 0.0, 0.0, 1.5, 0.0],
                [1.0, 1.0, 0.0, 0.0, -1.0, 1.0],
                [0.0, 0.5, 0.5, -0.5, 0.0, 1.0]]])
G2 = np.array([[[0.0, 1.0, 0.0, 3.0, -1.0, 0.0],
                [1.0, 0.0, 0.5, 0.0, 0.0, 0.0],
                [0.0, -1.0, 1.0, 1.0, 0.0, 0.5],
                [2.0, 0.0, 0.0, 1.0, 0.0, -0.5],
                [0.0, 0.0, 1.0, 0.0, 2.0, 0.0],
                [-0.5, 0.0, 0.0, 0.0, 1.0, 1.0]],
               [[1.0, 0.0, 0.0, -1.0, 0.0, 2.0],
                [0.0, 0.0, 1.0, 1.0, 0.0, 0.0],
                [0.5, 0.0, 0.0, 2.0, 1.0, 0.0],
                [0.0, 1.0, -1.0, 0.0, 1.0, 0.0],
                [0.0, 0.0, 0.0, 1.0, 0.0, -1.0],
                [1.0, 0.0, 2.0, 0.0, 0.0, 0.5]]])
PREFIX, GRID = 2, (2, 2)


def reference_rollout(attentions, fusion="mean", discard=0.0, keep_first=True):
    """Abnar & Zuidema's rollout of one image's blocks ``(heads, T, T)``, loop by loop."""
    tokens = attentions[0].shape[-1]
    rolled = np.eye(tokens)
    for attention in attentions:
        fused = {"mean": attention.mean(0), "max": attention.max(0),
                 "min": attention.min(0)}[fusion].copy()
        if discard:
            flat = fused.ravel()
            # the lowest entries, the later of equal ones first: all but the top, with
            # the earlier of equal ones first
            kept = np.argsort(-flat, kind="stable")[:tokens * tokens - int(
                tokens * tokens * discard)]
            lowest = sorted(set(range(tokens * tokens)) - set(kept))
            for index in lowest:
                if not (keep_first and index == 0):
                    flat[index] = 0.0
            fused = flat.reshape(tokens, tokens)
        step = 0.5 * fused + 0.5 * np.eye(tokens)
        for row in range(tokens):
            step[row] /= step[row].sum()
        rolled = step @ rolled
    return rolled


def reference_gradrollout(attentions, gradients):
    """Chefer et al.'s rule for one image: R = I, then R += mean_h((dA * A)+) R."""
    tokens = attentions[0].shape[-1]
    relevance = np.eye(tokens)
    for attention, gradient in zip(attentions, gradients, strict=True):
        weighted = np.maximum(gradient * attention, 0).mean(0)
        relevance = relevance + weighted @ relevance
    return relevance


def reference_map(relevance, readout, prefix, grid):
    """The read-out row over the patch columns, ReLU, scaled to a maximum of 1."""
    row = relevance[0, prefix:] if readout == "token" else \
        relevance[prefix:, prefix:].mean(0)
    heat = np.maximum(row.reshape(grid), 0)
    return heat / heat.max() if heat.max() > 0 else heat


def camcli_relevance(method, attentions, gradients=None, **options):
    from camcli.compute.backend import tensorflow
    from camcli.compute.methods.attention import gradient_rollout, rollout

    tf = tensorflow()
    batch = [tf.constant(a[None], tf.float32) for a in attentions]
    # every row of the relevance: the identity's rows times it (the methods pass one)
    rows = tf.eye(attentions[0].shape[-1], batch_shape=[1])
    if method == "rollout":
        return rollout(batch, rows, **options).numpy()[0]
    return gradient_rollout(batch, [tf.constant(g[None], tf.float32)
                                    for g in gradients], rows).numpy()[0]


@pytest.mark.parametrize("fusion", ["mean", "max", "min"])
@pytest.mark.parametrize("discard", [0.0, 0.5])
def test_rollout_equals_the_formula_on_hand_written_attention(fusion, discard):
    got = camcli_relevance("rollout", [A1, A2], head_fusion=fusion, discard_ratio=discard)
    want = reference_rollout([A1, A2], fusion, discard)
    np.testing.assert_allclose(got, want, atol=1e-5)
    # the two prefix tokens take part in every product: dropping them changes the map
    assert not np.allclose(want[0, PREFIX:], reference_rollout(
        [A1[:, PREFIX:, PREFIX:], A2[:, PREFIX:, PREFIX:]], fusion, discard)[0, :],
        atol=1e-3)


def test_discarding_never_drops_the_read_out_tokens_own_entry():
    # token 0's own entry is the matrix's least, the only one a ratio of 1/36 drops: kept
    low = np.full((2, 6, 6), 1 / 6)
    low[:, 0] = [0.01, 0.2, 0.2, 0.2, 0.2, 0.19]
    kept = camcli_relevance("rollout", [low], discard_ratio=0.03)
    assert np.allclose(kept, reference_rollout([low], "mean", 0.03, keep_first=True))
    assert np.allclose(kept, reference_rollout([low], "mean", 0.0))  # nothing else dropped
    assert not np.allclose(kept, reference_rollout([low], "mean", 0.03, keep_first=False))


def test_discarding_at_a_real_vits_size_keeps_exactly_the_top_entries():
    """197 tokens (ViT-B/16), a batch of 8: 90% of each fused matrix dropped, in memory of
    the matrices' size (a one-hot of the dropped entries would need 43 GB)."""
    from camcli.compute.backend import tensorflow
    from camcli.compute.methods.attention import _discarded

    fused = np.random.default_rng(0).uniform(0, 1, (8, 197, 197)).astype(np.float32)
    kept = _discarded(tensorflow().constant(fused), 0.9, keep_first=False).numpy()
    count = 197 * 197 - int(197 * 197 * 0.9)
    assert ((kept != 0).reshape(8, -1).sum(axis=1) == count).all()
    for image, left in zip(fused, kept, strict=True):
        threshold = np.sort(image.ravel())[-count]
        np.testing.assert_array_equal(left, np.where(image >= threshold, image, 0))


def test_gradient_rollout_equals_the_formula_on_hand_written_attention():
    got = camcli_relevance("gradrollout", [A1, A2], [G1, G2])
    np.testing.assert_allclose(got, reference_gradrollout([A1, A2], [G1, G2]), atol=1e-5)


def reference_legrad(gradients, readout, prefix, grid):
    """LeGrad for one image: per block, ReLU(dS_l/dA_l) averaged over the heads, its
    read-out row(s) over the patch columns; summed over the blocks, then min-max."""
    total = np.zeros(grid)
    for gradient in gradients:
        positive = np.maximum(gradient, 0).mean(0)
        row = positive[0, prefix:] if readout == "token" else \
            positive[prefix:, prefix:].mean(0)
        total += row.reshape(grid)
    low, high = total.min(), total.max()
    return (total - low) / (high - low) if high > low else np.zeros(grid)


@pytest.mark.parametrize("readout", ["token", "mean"])
def test_legrad_equals_the_formula_on_hand_written_gradients(readout):
    from camcli.compute.backend import tensorflow
    from camcli.compute.methods.attention import legrad, min_max, readout_rows
    from camcli.compute.models.tokens import TokenGrid

    tf = tensorflow()
    grid = TokenGrid(PREFIX, *GRID)
    gradients = [tf.constant(g[None], tf.float32) for g in (G1, G2)]
    raw = legrad(gradients, readout_rows(readout, grid, gradients[0]), grid)
    np.testing.assert_allclose(min_max(raw).numpy()[0],
                               reference_legrad([G1, G2], readout, PREFIX, GRID), atol=1e-5)
    # by hand, token read-out: block 1's row 0 over the patches is mean(relu) of heads
    # (0, 2, 0, 0) and (1, 0, 2, 0.5); block 2's, (0, 3, 0, 0) and (0, 0, 0, 2)
    if readout == "token":
        np.testing.assert_allclose(raw.numpy()[0], [[0.5, 2.5], [1.0, 1.25]], atol=1e-6)


@pytest.mark.parametrize("readout", ["token", "mean"])
def test_the_read_out_row_over_the_patch_columns(readout):
    from camcli.compute.backend import tensorflow
    from camcli.compute.methods.attention import patch_map, readout_rows
    from camcli.compute.models.tokens import TokenGrid

    tf = tensorflow()
    relevance = reference_gradrollout([A1, A2], [G1, G2])
    matrix = tf.constant(relevance[None], "float32")
    grid = TokenGrid(PREFIX, *GRID)
    got = patch_map(tf.matmul(readout_rows(readout, grid, matrix[:, None]), matrix),
                    grid).numpy()[0]
    row = relevance[0, PREFIX:] if readout == "token" else relevance[PREFIX:, PREFIX:].mean(0)
    np.testing.assert_allclose(got, row.reshape(GRID), atol=1e-6)  # row-major, 2x2


# -- end to end, on keras-hub models ----------------------------------------------------------

#: Each model, its prefix tokens and its read-out.
MODELS = {"vit": (1, "token"), "vit_gap": (1, "mean"), "deit": (2, "token"),
          "dinov2": (5, "token")}


def build(keras, name):
    if name == "vit_gap":
        return hub_models.vit(keras, pooling="gap")
    return getattr(hub_models, name)(keras)


@pytest.fixture(scope="module")
def hub(keras, tmp_path_factory):
    """Each model as saved to a .keras file and loaded back, and the file."""
    folder = tmp_path_factory.mktemp("attention")
    made = {}
    for name in MODELS:
        path = folder / f"{name}.keras"
        build(keras, name).save(path)
        made[name] = (keras.saving.load_model(path), str(path))
    return made


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Three 32x32 PNGs (lossless, at the models' size: no resize changes them)."""
    folder = tmp_path_factory.mktemp("photos")
    hub_models.write_photos(folder, seed=7)
    return folder


def records(out) -> dict:
    return {r["input"]: r for r in map(json.loads, (out / "manifest.jsonl").open())}


@pytest.mark.parametrize("method", ["rollout", "gradrollout"])
@pytest.mark.parametrize("name", list(MODELS))
def test_batch_maps_equal_the_formulas_on_the_models_own_attention(name, method, hub, photos,
                                                                   tmp_path):
    model, path = hub[name]
    out = tmp_path / "out"
    result = run(["batch", str(photos), "--out", str(out), "--model", path, "--method",
                  method, "--save-maps", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    prefix, readout = MODELS[name]
    pixels = hub_models.read_photos(photos)
    attentions, gradients, top = hub_models.reference_attention(
        model, model.get_layer("predictions"), pixels)
    assert len(attentions) == 2  # two blocks
    for number in range(3):
        mine = [a[number] for a in attentions]
        if method == "rollout":
            relevance = reference_rollout(mine)
        else:
            relevance = reference_gradrollout(mine, [g[number] for g in gradients])
        record = records(out)[str(photos / f"p{number}.png")]
        assert record["method"] == method and record["class_index"] == top[number]
        assert len(record["layer"]) == 2 and all(
            layer.endswith(":attention") for layer in record["layer"])
        assert record["tokens"] == [f"{prefix}+4x4"] * 2 and record["fuse"] is None
        got = np.load(out / record["map"])
        np.testing.assert_allclose(got, reference_map(relevance, readout, prefix, (4, 4)),
                                   atol=1e-5)


def final_norm(name, model):
    """The model's last LayerNormalization: the encoder's (ViT, DeiT) or the backbone's
    (DINOv2)."""
    if name == "dinov2":
        return next(layer for layer in model.layers if hasattr(layer, "layernorm")).layernorm
    encoder = "deit_encoder" if name == "deit" else "vit_encoder"
    return model.backbone.get_layer(encoder).layer_norm


@pytest.mark.parametrize("name", list(MODELS))
def test_legrad_maps_equal_the_formula_with_the_models_own_head_on_each_block(
        name, hub, photos, tmp_path):
    model, path = hub[name]
    out = tmp_path / "out"
    result = run(["batch", str(photos), "--out", str(out), "--model", path, "--method",
                  "legrad", "--save-maps", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    prefix, readout = MODELS[name]
    gradients, top = hub_models.reference_legrad(
        model, model.get_layer("predictions"), final_norm(name, model), readout,
        hub_models.read_photos(photos))
    for number in range(3):
        record = records(out)[str(photos / f"p{number}.png")]
        assert record["method"] == "legrad" and record["class_index"] == top[number]
        assert record["class_specific"] is True and len(record["layer"]) == 2
        want = reference_legrad([g[number] for g in gradients], readout, prefix, (4, 4))
        assert want.max() == 1.0 and want.min() == 0.0  # a map with contrast
        np.testing.assert_allclose(np.load(out / record["map"]), want, atol=1e-5)


def test_legrad_explains_the_blocks_layer_names(hub, photos, tmp_path):
    model, path = hub["vit"]
    address = records_of_rollout(path, photos, tmp_path)[1]  # block 2's attention
    out = tmp_path / "out"
    result = run(["batch", str(photos), "--out", str(out), "--model", path, "--method",
                  "legrad", "--layer", address, "--save-maps", "-q"])
    assert result.exit_code == 0, result.output
    gradients, _ = hub_models.reference_legrad(
        model, model.get_layer("predictions"), final_norm("vit", model), "token",
        hub_models.read_photos(photos))
    for number in range(3):
        record = records(out)[str(photos / f"p{number}.png")]
        assert record["layer"] == address
        np.testing.assert_allclose(np.load(out / record["map"]), reference_legrad(
            [gradients[1][number]], "token", 1, (4, 4)), atol=1e-5)


def test_rollout_settings_are_part_of_the_request(hub, photos, tmp_path):
    _, path = hub["deit"]
    out = tmp_path / "out"
    base = ["batch", str(photos), "--out", str(out), "--model", path, "--method", "rollout",
            "--device", "cpu", "-q"]
    assert "3 written" in run(base).stderr
    again = run([*base, "--discard-ratio", "0.3", "--head-fusion", "max"])
    assert "3 inputs: 3 written, 0 already done" in again.stderr  # another request: redone
    assert {r["settings"] for r in records(out).values()} == {
        "head_fusion=max,discard_ratio=0.3"}
    assert "3 inputs: 0 written, 3 already done" in run(
        [*base, "--discard-ratio", "0.3", "--head-fusion", "max"]).stderr


def test_swin_attends_otherwise_and_is_refused_in_one_line(keras, tmp_path, photos):
    path = tmp_path / "swin.keras"
    hub_models.swin(keras).save(path)
    for method in ("rollout", "gradrollout", "legrad"):
        result = run(["batch", str(photos), "--out", str(tmp_path / "o"), "--model",
                      str(path), "--method", method, "--device", "cpu"])
        assert result.exit_code == 2
        assert result.stderr.strip().splitlines()[-1] == (
            f"Error: {method} reads the attention probabilities of "
            "keras.layers.MultiHeadAttention, and the blocks of SwinTransformerBackbone "
            "attend with WindowAttention; on this model use a method that explains a token "
            "layer: gradcam, gradcam++, xgradcam, hirescam, layercam or eigencam ('camcli "
            "layers MODEL' lists the layers)")


def test_a_cnn_is_refused_it_has_no_attention(model_args, photos, tmp_path):
    result = run(["explain", "--method", "rollout", str(photos / "p0.png"), "--out",
                  str(tmp_path), *model_args])
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "Error: rollout needs attention: it reads the attention of a transformer's blocks, "
        "and model 'tiny_gap' has no transformer blocks; use gradcam or another CAM method "
        "('camcli methods')")


def test_the_attention_methods_choose_their_blocks_and_other_methods_refuse_attention(
        hub, photos, tmp_path):
    _, path = hub["vit"]
    given = run(["batch", str(photos), "--out", str(tmp_path / "o"), "--model", path,
                 "--method", "gradrollout", "--layer", "vit_encoder/transformer_block_1"])
    assert given.exit_code == 2
    assert given.stderr.strip().splitlines()[-1] == (
        "Error: gradrollout has no target layer: it uses the attention of every transformer "
        "block itself; drop --layer")
    address = records_of_rollout(path, photos, tmp_path)[0]
    other = run(["batch", str(photos), "--out", str(tmp_path / "g"), "--model", path,
                 "--layer", address])
    assert other.exit_code == 2
    assert other.stderr.strip().splitlines()[-1] == (
        "Error: gradcam explains feature maps and tokens; an '...:attention' address is read "
        "by the attention methods (rollout, gradrollout, legrad)")
    option = run(["batch", str(photos), "--out", str(tmp_path / "x"), "--model", path,
                  "--method", "gradcam", "--discard-ratio", "0.2"])
    assert option.exit_code == 2
    assert option.stderr.strip().splitlines()[-1] == (
        "Error: --head-fusion and --discard-ratio apply to the rollout method only")


def test_a_vision_transformers_default_is_the_measured_one_and_a_cnns_is_gradcam(
        hub, photos, tmp_path, model_args, keras):
    _, path = hub["deit"]
    out = tmp_path / "vit"
    given = run(["batch", str(photos), "--out", str(out), "--model", path, "--save-maps",
                 "--device", "cpu"])
    assert given.exit_code == 0, given.output
    assert ("method: rollout --head-fusion max --discard-ratio 0.5 (the default for a "
            "vision transformer (DeiTBackbone), measured by bench/transformers.py)"
            ) in given.stderr
    chosen = list(records(out).values())
    assert {(r["method"], r["settings"], r["class_specific"]) for r in chosen} == {
        ("rollout", "head_fusion=max,discard_ratio=0.5", False)}
    model = hub["deit"][0]
    attentions, _, _ = hub_models.reference_attention(
        model, model.get_layer("predictions"), hub_models.read_photos(photos))
    for number in range(3):
        record = records(out)[str(photos / f"p{number}.png")]
        want = reference_map(reference_rollout([a[number] for a in attentions], "max", 0.5),
                             "token", 2, (4, 4))
        np.testing.assert_allclose(np.load(out / record["map"]), want, atol=1e-5)
    # the same maps as rollout with those options: the same request, resume skips them
    again = run(["batch", str(photos), "--out", str(out), "--model", path, "--method",
                 "rollout", "--head-fusion", "max", "--discard-ratio", "0.5",
                 "--save-maps", "--device", "cpu"])
    assert "3 inputs: 0 written, 3 already done" in again.stderr, again.stderr
    tuned = run(["batch", str(photos), "--out", str(tmp_path / "tuned"), "--model", path,
                 "--discard-ratio", "0.2", "--device", "cpu"])  # an option given: kept
    assert {r["settings"] for r in records(tmp_path / "tuned").values()} == {
        "head_fusion=max,discard_ratio=0.2"}, tuned.output
    block = chosen[0]["layer"][1].removesuffix("/mha:attention")  # the last block
    layer = run(["batch", str(photos), "--out", str(tmp_path / "layer"), "--model", path,
                 "--layer", f"{block}:input", "--device", "cpu"])
    assert layer.exit_code == 0, layer.output
    assert {r["method"] for r in records(tmp_path / "layer").values()} == {"gradcam"}
    swin = tmp_path / "swin.keras"
    hub_models.swin(keras).save(swin)  # its blocks attend otherwise: gradcam
    windows = run(["batch", str(photos), "--out", str(tmp_path / "swin"), "--model",
                   str(swin), "--device", "cpu"])
    assert windows.exit_code == 0, windows.output
    assert {r["method"] for r in records(tmp_path / "swin").values()} == {"gradcam"}
    cnn = run(["batch", str(photos), "--out", str(tmp_path / "cnn"), *model_args,
               "--discard-ratio", "0.2"])
    assert cnn.exit_code == 2
    assert cnn.stderr.strip().splitlines()[-1] == (
        "Error: --head-fusion and --discard-ratio apply to the rollout method only")
    plain = run(["batch", str(photos), "--out", str(tmp_path / "cnn"), *model_args])
    assert {r["method"] for r in records(tmp_path / "cnn").values()} == {"gradcam"}, \
        plain.output


def records_of_rollout(path, photos, tmp_path) -> list[str]:
    out = tmp_path / "r"
    assert run(["batch", str(photos), "--out", str(out), "--model", path, "--method",
                "rollout", "-q"]).exit_code == 0
    return next(iter(records(out).values()))["layer"]


def test_top_k_maps_reuse_rollouts_one_map_and_rank_gradrollouts(hub, photos, tmp_path):
    _, path = hub["vit"]
    for method in ("rollout", "gradrollout"):
        out = tmp_path / method
        result = run(["batch", str(photos / "p0.png"), "--out", str(out), "--model", path,
                      "--method", method, "--top-k-maps", "2", "--save-maps", "-q"])
        assert result.exit_code == 0, result.output
        maps = [np.load(out / r["map"]) for r in sorted(
            map(json.loads, (out / "manifest.jsonl").open()), key=lambda r: r["rank"])]
        same = np.allclose(maps[0], maps[1])
        assert same == (method == "rollout"), method  # not class-specific / class-specific


@pytest.mark.parametrize("method", ["rollout", "gradrollout", "legrad"])
def test_batched_equals_one_by_one(hub, photos, method):
    from camcli.compute.methods import METHODS
    from camcli.compute.models import graph

    model, _ = hub["deit"]
    kind = METHODS[method]
    explainer = kind(graph.build(model, kind.own_layers(model)))
    pixels = hub_models.read_photos(photos)
    together = explainer(pixels)
    for number in range(3):
        alone = explainer(pixels[number:number + 1])
        np.testing.assert_allclose(alone.maps[0], together.maps[number], atol=1e-5)
